"""The reference model: a small fixed network timed beside every measurement.

A measurement's blocks of runs alternate with short blocks of this model in the same process,
so the machine's state at each moment (a slow host, a busy sibling core, frequency) is measured
alongside, and a latency can be expressed against it. Built with onnx.helper from a fixed seed,
so it is byte-identical everywhere and needs no torch: a worker on a target builds it itself.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from hwnas.jsonutil import cache_root

REFERENCE_VERSION = 1
REFERENCE_INPUT = (1, 3, 112, 112)


def reference_onnx() -> bytes:
    """A stem and three inverted-residual blocks (1x1 expand to 96, depthwise 3x3, 1x1 project)
    at 56x56: about 1 ms on one CPU thread. Its working set and kernels are those of the measured
    MBConv subnets, so a slow moment slows it by the same factor (a smaller, cache-resident
    reference tracked a busy machine less well: ratio CoV 6.7% against 1.3%)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(REFERENCE_VERSION)
    inits, nodes = [], []

    def conv(x, c_in, c_out, k, stride=1, group=1, act="swish"):
        i = len(nodes)
        w, b, y = f"w{i}", f"b{i}", f"y{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal((c_out, c_in // group, k, k)) * 0.1).astype(np.float32), w))
        inits.append(numpy_helper.from_array(np.zeros(c_out, np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], pads=[k // 2] * 4,
                                      strides=[stride, stride], group=group))
        if act == "swish":  # as torch exports SiLU: Sigmoid then Mul
            nodes.append(helper.make_node("Sigmoid", [y], [y + "s"]))
            nodes.append(helper.make_node("Mul", [y, y + "s"], [y + "m"]))
            return y + "m"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            return y + "r"
        if act == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", [y], [y + "s"]))
            return y + "s"
        return y

    def mbconv(x, c_in, c_out, expand, k, stride, se):
        h = conv(x, c_in, c_in * expand, 1)
        h = conv(h, c_in * expand, c_in * expand, k, stride, group=c_in * expand)
        if se:
            p = h + "p"
            nodes.append(helper.make_node("GlobalAveragePool", [h], [p]))
            g = conv(conv(p, c_in * expand, se, 1, act="relu"), se, c_in * expand, 1, act="sigmoid")
            nodes.append(helper.make_node("Mul", [h, g], [h + "g"]))
            h = h + "g"
        h = conv(h, c_in * expand, c_out, 1, act=None)
        if stride == 1 and c_in == c_out:
            nodes.append(helper.make_node("Add", [x, h], [h + "a"]))
            h = h + "a"
        return h

    x = conv("x", 3, 16, 3, stride=2)  # 112 -> 56
    x = mbconv(x, 16, 24, 6, 3, 2, se=0)  # -> 28
    x = mbconv(x, 24, 24, 3, 5, 1, se=24)
    x = mbconv(x, 24, 40, 6, 5, 2, se=24)  # -> 14
    x = mbconv(x, 40, 40, 6, 3, 1, se=40)
    x = mbconv(x, 40, 80, 6, 3, 2, se=0)  # -> 7
    x = mbconv(x, 80, 80, 3, 5, 1, se=80)
    x = conv(x, 80, 640, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    graph = helper.make_graph(
        nodes, "hwnas_reference", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(REFERENCE_INPUT))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 640, 1, 1])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwnas")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@functools.cache
def reference_path(cache_dir: Path | None = None) -> Path:
    """The reference model's file in `cache_dir` (default: the ONNX cache), written once, atomically."""
    if cache_dir is None:
        cache_dir = cache_root() / "reference"  # beside, not inside, the export cache (its entries carry records)
    data = reference_onnx()
    path = Path(cache_dir) / f"reference-v{REFERENCE_VERSION}-{hashlib.sha256(data).hexdigest()[:12]}.onnx"
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path
