"""Latency models: lookup tables, the registered fitted models, their data and evaluation."""

# What `hwnas surrogate eval` and the demo score by default.
DEFAULT_MODELS = ("lut", "linear", "lut+linear", "mlp", "gbt")
