"""PyTorch to ONNX: checked, compared with PyTorch numerically, cached on disk by content hash."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from hwnas import __version__
from hwnas.errors import HwnasError
from hwnas.jsonutil import atomic_path, cache_root, content_hash, read_json, write_json
from hwnas.locks import locked
from hwnas.spaces.mbconv import Arch, LayerSpec, Space
from hwnas.spaces.mbconv_ops import build_layer

OPSET = 18  # >= 17 as asked; the dynamo fallback cannot write 17
PARITY_TOLERANCE = 1e-3  # max abs difference between ONNX Runtime and PyTorch outputs
EXPORT_SEED = 0  # weights are random but fixed, so the same spec gives the same file


@dataclass(frozen=True)
class Exported:
    path: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float
    cached: bool


def default_cache_dir() -> Path:
    return cache_root() / "onnx"


def export_module(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = OPSET) -> float:
    """Export `module` at `input_shape` to `path`; check the graph; return the max abs difference."""
    module = module.eval()
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(1))
    with atomic_path(path) as tmp:  # a unique name: two processes may export the same spec at once
        _torch_export(module, x, tmp, opset)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
        diff = _parity(tmp, module, x)
        if not diff <= PARITY_TOLERANCE:
            raise HwnasError(f"ONNX export of {path.name} differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE})")
    return diff


def _torch_export(module: torch.nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    """TorchScript exporter while torch has it: 0.5 s per 224x224 subnet against 4-10 s for the
    dynamo exporter (benchmarks/export_speed.py), which matters when a lookup table needs
    thousands of layers. Both fold BatchNorm into the convs in eval mode."""
    # The exporters print progress lines and deprecation chatter; keep the user's terminal clean.
    # One thread: tracing small graphs is ~3x faster without thread hand-offs on a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, **names)
        except (TypeError, NotImplementedError):  # a torch without the TorchScript exporter
            torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, **names)
        finally:
            torch.set_num_threads(threads)


def randomize_batchnorm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics, so the parity check also tests the folding of BN into convs
    (PyTorch's defaults make BN an identity and shrink the network's output towards 0)."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=generator))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=generator))


def _parity(path: Path, module: torch.nn.Module, x: torch.Tensor) -> float:
    import onnxruntime as ort

    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.max(np.abs(got - expected)))


def cached_export(key: dict, make_model, input_shape: tuple[int, ...], cache_dir: Path | None) -> Exported:
    """The file for `key`, made once: `make_model(path)` writes it and returns the parity. One
    process makes an entry at a time (a lock per entry); a damaged entry is made again."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = {**key, "opset": OPSET, "torch": torch.__version__, "hwnas": __version__}
    digest = content_hash(key)
    path, meta_path = cache_dir / f"{digest}.onnx", cache_dir / f"{digest}.json"
    if path.exists() and meta_path.exists():
        try:
            return _read_cached(path, meta_path, key, input_shape)
        except HwnasError:
            pass  # damaged, or being written by another process: decided below, under the lock
    with locked(cache_dir / f"{digest}.lock"):
        if path.exists() or meta_path.exists():
            try:
                return _read_cached(path, meta_path, key, input_shape)  # another process made it meanwhile
            except HwnasError as e:
                print(f"hwnas: warning: {e}; exporting it again", file=sys.stderr)
        try:
            diff = make_model(path)
        except OSError as e:
            raise HwnasError(f"cannot write ONNX cache in {cache_dir}: {e.strerror or e}") from None
        write_json(meta_path, {"key": key, "input_shape": list(input_shape), "max_abs_diff": diff,
                               "sha256": _sha256(path)})
    return Exported(path, input_shape, diff, cached=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cached(path: Path, meta_path: Path, key: dict, input_shape: tuple[int, ...]) -> Exported:
    """A cached export whose record matches its key and whose file is the one recorded."""
    meta = read_json(meta_path, "export record")
    damaged = f"cached export {path} is damaged"
    if not isinstance(meta, dict) or meta.get("key") != json.loads(json.dumps(key)) \
            or meta.get("input_shape") != list(input_shape):
        raise HwnasError(f"{damaged} (its record {meta_path.name} does not match)")
    diff = meta.get("max_abs_diff")
    if isinstance(diff, bool) or not isinstance(diff, (int, float)) or not 0 <= diff <= PARITY_TOLERANCE:
        raise HwnasError(f"{damaged} (its record holds no valid parity)")
    try:
        digest = _sha256(path)
    except OSError as e:
        raise HwnasError(f"{damaged} ({e.strerror or e})") from None
    if "sha256" not in meta:  # recorded by an older hwnas: check the graph once, then record its hash
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as e:  # onnx raises several types for damaged files
            raise HwnasError(f"{damaged} ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
        write_json(meta_path, {**meta, "sha256": digest})
    elif meta["sha256"] != digest:
        raise HwnasError(f"{damaged} (its content differs from the one recorded)")
    return Exported(path, input_shape, float(diff), cached=True)


def seeded(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`make()` with fixed random weights and non-trivial BatchNorm (so BN folding is checked too):
    the same spec always gives the same file."""
    torch.manual_seed(EXPORT_SEED)
    module = make()
    randomize_batchnorm(module, torch.Generator().manual_seed(EXPORT_SEED))
    return module.eval()


def seeded_layer(spec: LayerSpec) -> torch.nn.Module:
    """The layer with the weights its ONNX file holds."""
    return seeded(lambda: build_layer(spec))


def export_layer(spec: LayerSpec, cache_dir: Path | None = None) -> Exported:
    """One layer at its input shape; exported once per distinct spec."""
    return cached_export(
        {"layer": spec.key()}, lambda path: export_module(seeded_layer(spec), spec.input_shape, path),
        spec.input_shape, cache_dir,
    )


def compose(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    """Chain single-input, single-output models: each one's output feeds the next one's input."""
    nodes, initializers = [], []
    previous = "input"
    for i, model in enumerate(models):
        graph = onnx.compose.add_prefix(model, f"l{i}_").graph
        inp, out = graph.input[0].name, graph.output[0].name
        out_name = "output" if i == len(models) - 1 else out
        for node in graph.node:
            node.input[:] = [previous if name == inp else name for name in node.input]
            node.output[:] = [out_name if name == out else name for name in node.output]
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        previous = out_name
    first, last = models[0].graph, models[-1].graph
    inp = onnx.ValueInfoProto()
    inp.CopyFrom(first.input[0])
    inp.name = "input"
    out = onnx.ValueInfoProto()
    out.CopyFrom(last.output[0])
    out.name = "output"
    graph = onnx.helper.make_graph(nodes, "hwnas_subnet", [inp], [out], initializers)
    return onnx.helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version)


def export_layers(specs: list[LayerSpec], cache_dir: Path | None = None) -> Exported:
    """Consecutive layers as one model (a whole subnet, or an adjacent pair for the additivity
    test), composed from the layers' own cached exports: each distinct layer is exported once,
    so a new subnet of known layers costs milliseconds instead of a PyTorch export."""
    if len(specs) == 1:
        return export_layer(specs[0], cache_dir)
    parts = [export_layer(s, cache_dir) for s in specs]

    def make(path: Path) -> float:
        model = compose([onnx.load(str(p.path)) for p in parts])
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
        # Each part passed its own parity check and composing only wires them together
        # (tests compare composed models with PyTorch end to end): report the worst part.
        return max(p.max_abs_diff for p in parts)

    return cached_export({"layers": [s.key() for s in specs]}, make, specs[0].input_shape, cache_dir)


def export_arch(space: Space, arch: Arch | dict, batch: int = 1, cache_dir: Path | None = None) -> Exported:
    """A whole subnet at the space's resolution: the same network as its layers in sequence."""
    return export_layers(space.layers(arch, batch), cache_dir)
