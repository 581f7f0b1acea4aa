"""PyTorch to ONNX, on the host that has torch: `onnx.py` exports, checks and caches (and composes
MBConv layers); `networks.py` does it for a network, or a part, of any registered space."""
