"""TensorRT: the engine builder (`builder`, run in its own process) beside the runner that times
the engine (`runner`). Importing this package needs neither TensorRT nor a GPU."""
