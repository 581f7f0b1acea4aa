"""hwnas: hardware-in-the-loop benchmarking and search for latency-constrained NAS."""

__version__ = "0.1.0"
