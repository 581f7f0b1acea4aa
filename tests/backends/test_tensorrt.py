"""TensorRT export and backend: keys, shapes, parser errors, the build worker's timeout and
crash handling and the engine cache without TensorRT; the real build and measurement where
TensorRT and a GPU are present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.errors import HwnasError
from hwnas.backends.tensorrt import builder as trtx
from hwnas.backends.tensorrt.builder import BuildConfig
from hwnas.backends import MeasureProtocol, get_backend
from hwnas.backends.fingerprint import nvidia_gpu
from hwnas.backends.tensorrt.runner import (
    TensorrtBackend,
    TensorrtGraphBackend,
    join_layer_times,
    parse_engine_layers,
)


def make_onnx(path: Path, batch: int | str = 1, channels: int = 8, size: int = 16) -> Path:
    """Conv-ReLU-Conv built with onnx.helper (no torch): small enough for any test."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, size, size])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ----------------------------------------------------------------------------- keys and shapes


def test_engine_key_changes_with_everything_that_changes_the_engine():
    base = dict(onnx_sha256="a" * 64, trt_version="10.8.0", gpu="NVIDIA H100", config=BuildConfig())
    key = trtx.engine_key(**base)
    assert key == trtx.engine_key(**base) and len(key) == 24
    variants = [
        {"onnx_sha256": "b" * 64}, {"trt_version": "10.9.0"}, {"gpu": "NVIDIA A100"},
        {"config": BuildConfig(precision="fp16")}, {"config": BuildConfig(workspace=2 << 30)},
        {"config": BuildConfig(batch=8)}, {"config": BuildConfig(optimization_level=5)},
    ]
    keys = {trtx.engine_key(**{**base, **v}) for v in variants}
    assert len(keys) == len(variants) and key not in keys


def test_timing_cache_is_shared_across_models_and_workspaces_but_not_precisions():
    k = trtx.timing_cache_key("10.8.0", "NVIDIA H100", "fp32")
    assert k == trtx.timing_cache_key("10.8.0", "NVIDIA H100", "fp32")
    assert len({k, trtx.timing_cache_key("10.8.0", "NVIDIA H100", "fp16"),
                trtx.timing_cache_key("11.0.0", "NVIDIA H100", "fp32"),
                trtx.timing_cache_key("10.8.0", "NVIDIA L4", "fp32")}) == 4


@pytest.mark.parametrize("bad", [dict(precision="int8"), dict(workspace=100), dict(batch=0), dict(optimization_level=9)])
def test_build_config_rejects_bad_values(bad):
    with pytest.raises(HwnasError):
        BuildConfig(**bad)


def test_profile_shapes():
    assert trtx.profile_shapes("x", (1, 3, 224, 224), 8) == ((1, 3, 224, 224),) * 3
    assert trtx.profile_shapes("x", (-1, 3, 32, 32), 8) == ((1, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32))
    with pytest.raises(HwnasError, match="'x' has a dynamic dimension at axis 2"):
        trtx.profile_shapes("x", (1, 3, -1, 32), 1)


def test_network_flags_and_fp16_route_by_tensorrt_version():
    flag = SimpleNamespace(EXPLICIT_BATCH=0)
    trt8 = SimpleNamespace(__version__="8.6.1", NetworkDefinitionCreationFlag=flag, BuilderFlag=SimpleNamespace(FP16=0))
    trt10 = SimpleNamespace(__version__="10.8.0.43", NetworkDefinitionCreationFlag=flag, BuilderFlag=SimpleNamespace(FP16=0))
    trt11 = SimpleNamespace(__version__="11.0.0", NetworkDefinitionCreationFlag=flag, BuilderFlag=SimpleNamespace())
    assert trtx.network_flags(trt8) == 1 and trtx.network_flags(trt10) == 0 and trtx.network_flags(trt11) == 0
    assert trtx.has_fp16_flag(trt10) and not trtx.has_fp16_flag(trt11)


class FakeError:
    def __init__(self, desc, node, name=None, op=None):
        self._d, self._n = desc, node
        if name is not None:  # TensorRT 10 has these; 8 does not
            self.node_name = lambda: name
            self.node_operator = lambda: op

    def desc(self):
        return self._d

    def node(self):
        return self._n


def test_every_parser_error_is_reported_with_its_node_in_one_line():
    parser = SimpleNamespace(
        num_errors=3,
        get_error=lambda i: [
            FakeError("No importer registered for op: FancyOp", 4, "/block/fancy", "FancyOp"),
            FakeError("Assertion failed: inputs.size() == 2\nmore", 7),
            FakeError("Model has no graph", -1),
        ][i],
    )
    msg = trtx.format_parser_errors("m.onnx", trtx.parser_errors(parser))
    assert "\n" not in msg
    assert msg.startswith("TensorRT cannot parse m.onnx: 3 errors: ")
    assert "node 4 '/block/fancy' (FancyOp): No importer registered for op: FancyOp" in msg
    assert "node 7: Assertion failed: inputs.size() == 2 more" in msg
    assert "graph: Model has no graph" in msg


# ----------------------------------------------------------------------------- the build worker


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_worker_success_returns_its_wall_time(tmp_path):
    elapsed = trtx.run_worker(py("print('ok')"), timeout_s=30, log_path=tmp_path / "w.log", what="job")
    assert elapsed > 0 and (tmp_path / "w.log").read_text().strip() == "ok"


def test_worker_timeout_kills_it_and_its_children_and_shows_the_log(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('building layer 3 of 40', flush=True)\n"
        "time.sleep(60)\n"
    )
    t0 = time.perf_counter()
    with pytest.raises(HwnasError) as e:
        trtx.run_worker(py(code), timeout_s=3, log_path=tmp_path / "w.log", what="TensorRT engine build for m.onnx")
    assert time.perf_counter() - t0 < 15
    msg = str(e.value)
    assert msg.startswith("TensorRT engine build for m.onnx timed out after 3 s and was stopped")
    assert "building layer 3 of 40" in msg and "\n" not in msg
    child = int(pidfile.read_text())
    deadline = time.time() + 5
    while time.time() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the worker's own child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie waiting for its reaper is dead


def test_worker_crash_by_signal_names_the_signal_and_the_tail(tmp_path):
    code = "import os, signal; print('[TensorRT ERROR] tactic 7 failed', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    with pytest.raises(HwnasError, match=r"job was killed by SIGSEGV; last lines of .*\[TensorRT ERROR\] tactic 7 failed"):
        trtx.run_worker(py(code), timeout_s=30, log_path=tmp_path / "w.log", what="job")


def test_worker_exception_exit_code_and_traceback_tail(tmp_path):
    with pytest.raises(HwnasError, match=r"job exited with code 1; .*ValueError: bad tactic"):
        trtx.run_worker(py("raise ValueError('bad tactic')"), timeout_s=30, log_path=tmp_path / "w.log", what="job")


def test_worker_own_error_line_is_passed_through_as_it_is(tmp_path):
    code = "import sys; print('noise'); print('hwnas-error: TensorRT cannot parse m.onnx: 1 error: x', file=sys.stderr); sys.exit(2)"
    with pytest.raises(HwnasError) as e:
        trtx.run_worker(py(code), timeout_s=30, log_path=tmp_path / "w.log", what="job")
    assert str(e.value) == "TensorRT cannot parse m.onnx: 1 error: x"


def test_worker_that_cannot_start(tmp_path):
    with pytest.raises(HwnasError, match="cannot start the worker for job"):
        trtx.run_worker([str(tmp_path / "no-such-python")], timeout_s=5, log_path=tmp_path / "w.log", what="job")


def fake_builder(monkeypatch, code: str) -> list:
    """Replace the worker command by a Python snippet given the engine path as argv[1]."""
    calls = []

    def command(onnx, out, timing, config):
        calls.append((onnx, out, timing, config))
        return [sys.executable, "-c", code, str(out)]

    monkeypatch.setattr(trtx, "worker_command", command)
    return calls


def test_engine_cache_builds_once_per_key(monkeypatch, tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    calls = fake_builder(monkeypatch, "import sys; open(sys.argv[1], 'wb').write(b'plan')")
    kw = dict(cache_dir=tmp_path / "cache", trt_version="10.8.0", gpu="Fake GPU")
    first = trtx.build_engine(model, BuildConfig(), **kw)
    again = trtx.build_engine(model, BuildConfig(), **kw)
    assert not first.cached and again.cached and first.path == again.path and len(calls) == 1
    assert first.path.read_bytes() == b"plan" and first.path.parent.name == "engines"
    meta = trtx.engine_meta(first)
    assert meta["gpu"] == "Fake GPU" and meta["tensorrt"] == "10.8.0" and meta["config"]["precision"] == "fp32"
    half = trtx.build_engine(model, BuildConfig(precision="fp16"), **kw)
    assert not half.cached and half.key != first.key and len(calls) == 2
    assert calls[0][2] != calls[1][2]  # fp16 has its own timing cache
    forced = trtx.build_engine(model, BuildConfig(), force=True, **kw)
    assert not forced.cached and len(calls) == 3


def test_a_crashed_build_leaves_no_engine_and_the_next_call_retries(monkeypatch, tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    kw = dict(cache_dir=tmp_path / "cache", trt_version="10.8.0", gpu="Fake GPU")
    fake_builder(monkeypatch, "import os; print('out of host memory', flush=True); os._exit(137)")
    with pytest.raises(HwnasError, match="exited with code 137; .*out of host memory"):
        trtx.build_engine(model, **kw)
    assert not list((tmp_path / "cache").glob("engines/*.engine"))
    fake_builder(monkeypatch, "import os; os._exit(0)")
    with pytest.raises(HwnasError, match="exited cleanly but wrote no engine"):
        trtx.build_engine(model, **kw)


def test_the_real_worker_without_tensorrt_reports_its_error(tmp_path):
    """`python -m hwnas.backends.tensorrt.builder build` in a fresh process: parses its arguments,
    and without TensorRT ends with the one-line error, which the parent passes on."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: the real build is tested below")
    except ImportError:
        pass
    model = make_onnx(tmp_path / "m.onnx")
    with pytest.raises(HwnasError, match=r"^TensorRT is not installed \(pip install tensorrt"):
        trtx.build_engine(model, cache_dir=tmp_path / "cache", trt_version="10.8.0", gpu="Fake GPU", timeout_s=120)


def test_gpu_modules_import_without_torch_tensorrt_or_cuda():
    code = (
        "import sys\n"
        "import hwnas.backends.tensorrt.runner, hwnas.backends.tensorrt.builder, hwnas.backends.cuda\n"
        "bad = [m for m in ('torch', 'tensorrt', 'cuda', 'pycuda') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})


# ----------------------------------------------------------------------------- fp16 conversion


def test_fp16_conversion_keeps_fp32_io(tmp_path):
    pytest.importorskip("onnxconverter_common", reason="onnxconverter-common is not installed")
    data = make_onnx(tmp_path / "m.onnx").read_bytes()
    model = onnx.load_from_string(trtx.convert_to_fp16(data))
    onnx.checker.check_model(model)
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(n.op_type == "Cast" for n in model.graph.node)


def test_fp16_conversion_without_the_converter_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(HwnasError, match="pip install onnx onnxconverter-common"):
        trtx.convert_to_fp16(make_onnx(tmp_path / "m.onnx").read_bytes())


# ----------------------------------------------------------------------------- layer report parsing

ENGINE_INFO = {
    "Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to conv1 + relu1", "LayerType": "Reformat", "Metadata": ""},
        {"Name": "conv1 + relu1", "LayerType": "CaskConvolution", "TacticName": "sm90_xmma_fprop",
         "Metadata": "[ONNX Layer: conv1]\x1f[ONNX Layer: relu1]"},
        {"Name": "conv2", "LayerType": "CaskConvolution", "Metadata": "[ONNX Layer: conv2]"},
    ],
    "Bindings": ["x", "y"],
}


def test_parse_engine_layers_reads_the_fused_onnx_nodes():
    layers = parse_engine_layers(json.dumps(ENGINE_INFO))
    assert [layer["onnx_nodes"] for layer in layers] == [[], ["conv1", "relu1"], ["conv2"]]
    assert layers[1]["type"] == "CaskConvolution" and layers[1]["tactic"] == "sm90_xmma_fprop"


def test_parse_engine_layers_with_names_only_splits_fused_names():
    layers = parse_engine_layers({"Layers": ["conv1 + relu1", "Reformatting CopyNode for Output 0", "conv2"]})
    assert [layer["onnx_nodes"] for layer in layers] == [["conv1", "relu1"], [], ["conv2"]]


def test_join_layer_times_medians_in_engine_order_and_keeps_unlisted_layers():
    layers = parse_engine_layers(ENGINE_INFO)
    times = {"conv2": [0.3, 0.1, 0.2], "conv1 + relu1": [0.5, 0.5], "myelin extra": [0.05]}
    out = join_layer_times(layers, times)
    assert [r["name"] for r in out][-1] == "myelin extra"
    by = {r["name"]: r for r in out}
    assert by["conv2"]["median_ms"] == pytest.approx(0.2) and by["conv2"]["n"] == 3
    assert by["conv1 + relu1"]["mean_ms"] == pytest.approx(0.5)
    assert by[ENGINE_INFO["Layers"][0]["Name"]]["median_ms"] is None


# ----------------------------------------------------------------------------- the backends

HAS_TRT_AND_GPU = nvidia_gpu() is not None
try:
    import tensorrt  # noqa: F401
except ImportError:
    HAS_TRT_AND_GPU = False


@pytest.mark.skipif(HAS_TRT_AND_GPU, reason="checks the error on a machine that lacks TensorRT or a GPU")
def test_get_backend_tensorrt_says_in_one_line_what_is_missing():
    with pytest.raises(HwnasError) as e:
        get_backend("tensorrt")
    msg = str(e.value)
    assert msg.startswith("backend tensorrt cannot run here: ") and "\n" not in msg
    if nvidia_gpu() is None:
        assert "no NVIDIA GPU is present" in msg
    with pytest.raises(HwnasError, match="^backend tensorrt-graph cannot run here"):
        TensorrtGraphBackend().check()


def test_backend_options_are_validated_when_created():
    assert TensorrtGraphBackend.cuda_graph and TensorrtGraphBackend.name == "tensorrt-graph"
    with pytest.raises(HwnasError, match="workspace"):
        TensorrtBackend(workspace=10)
    with pytest.raises(HwnasError, match="precision"):
        TensorrtBackend(precision="int8")


gpu = pytest.mark.skipif(not HAS_TRT_AND_GPU, reason="needs TensorRT and an NVIDIA GPU")
FAST = MeasureProtocol(warmup_runs=3, warmup_s=0.0, min_runs=20, min_time_s=0.0, max_time_s=20, reference=False, processes=1)


@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_caches_and_measures(tmp_path, precision):
    model = make_onnx(tmp_path / "m.onnx", channels=32, size=64)
    backend = TensorrtBackend(precision=precision, cache_dir=tmp_path / "cache")
    backend.check()
    m = backend.measure(model, FAST)
    assert m.stats["n"] >= 20 and 0 < m.stats["min_ms"] <= m.median_ms <= m.stats["max_ms"] < 1000
    assert m.fingerprint["backend"] == "tensorrt" and m.fingerprint["provider"] == "tensorrt"
    assert m.fingerprint["precision"] == precision and m.fingerprint["timed_h2d"] is False
    assert backend.engine(model).cached


@gpu
def test_graph_and_h2d_variants_agree_with_plain_enqueue(tmp_path):
    model = make_onnx(tmp_path / "m.onnx", channels=64, size=128)
    kw = dict(cache_dir=tmp_path / "cache")
    plain = TensorrtBackend(**kw).measure(model, FAST).median_ms
    graph = TensorrtGraphBackend(**kw).measure(model, FAST).median_ms
    h2d = TensorrtBackend(h2d=True, **kw).measure(model, FAST).median_ms
    assert 1 / 3 < graph / plain < 3
    assert h2d > 0.9 * plain  # the copy can only add time


@gpu
def test_dynamic_batch_engine_runs_at_the_measured_batch(tmp_path):
    model = make_onnx(tmp_path / "m.onnx", batch="N")
    m = TensorrtBackend(cache_dir=tmp_path / "cache").measure(model, FAST, batch=4)
    assert m.median_ms > 0 and m.fingerprint["batch"] == 4


@gpu
def test_layer_report_times_layers_and_names_fused_onnx_nodes(tmp_path):
    model = make_onnx(tmp_path / "m.onnx", channels=32, size=64)
    report = TensorrtBackend(cache_dir=tmp_path / "cache").layer_report(model, runs=10)
    timed = [layer for layer in report["layers"] if layer["n"]]
    assert timed and all(layer["n"] == 10 and layer["median_ms"] >= 0 for layer in timed)
    fused = {node for layer in report["layers"] for node in layer["onnx_nodes"]}
    assert {"conv1", "conv2"} <= fused
    assert report["total_median_ms"] > 0


@gpu
def test_unparseable_onnx_is_one_line_from_the_worker(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(HwnasError, match="^TensorRT cannot parse bad.onnx"):
        TensorrtBackend(cache_dir=tmp_path / "cache").engine(bad)


# ----------------------------------------------------------------------------- a fake TensorRT
# The real API cannot run here. This stand-in has the same names and call shapes (TensorRT
# 10/11 Python API), so the worker's build recipe and the runner's set-up, timing, graph and
# profiler paths execute end to end; what each call returns is recorded for the asserts.

FAKE_TENSORRT = r'''
import enum, json, os
import onnx

__version__ = os.environ.get("FAKE_TRT_VERSION", "10.8.0.43")
MAJOR = int(__version__.split(".")[0])

class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4
    def __init__(self):
        pass

class Logger(ILogger):
    ERROR = ILogger.Severity.ERROR
    WARNING = ILogger.Severity.WARNING
    def __init__(self, severity=ILogger.Severity.WARNING):
        pass

class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0

class MemoryPoolType(enum.Enum):
    WORKSPACE = 0

class ProfilingVerbosity(enum.Enum):
    LAYER_NAMES_ONLY = 0
    DETAILED = 2

BuilderFlag = enum.Enum("BuilderFlag", ["FP16", "TF32"] if MAJOR < 11 else ["TF32"])

class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2

class TensorLocation(enum.Enum):
    DEVICE = 0
    HOST = 1

class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1

class LayerInformationFormat(enum.Enum):
    ONELINE = 0
    JSON = 1

class IProfiler:
    def __init__(self):
        pass

def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]

class Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)

class Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs, self.nodes = flags, [], [], []
    @property
    def num_inputs(self):
        return len(self.inputs)
    def get_input(self, i):
        return self.inputs[i]

class ParserError:
    def __init__(self, desc):
        self._desc = desc
    def desc(self):
        return self._desc
    def node(self):
        return -1
    def node_name(self):
        return ""
    def node_operator(self):
        return ""

class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.errors = network, []
    @property
    def num_errors(self):
        return len(self.errors)
    def get_error(self, i):
        return self.errors[i]
    def parse(self, model, path=None):
        try:
            m = onnx.load_from_string(bytes(model))
        except Exception as e:
            self.errors.append(ParserError(f"failed to parse the ONNX protobuf: {type(e).__name__}"))
            return False
        if not m.graph.node:
            self.errors.append(ParserError("the model has no nodes"))
            return False
        init = {t.name for t in m.graph.initializer}
        self.network.inputs = [Tensor(v.name, _dims(v)) for v in m.graph.input if v.name not in init]
        self.network.outputs = [Tensor(v.name, _dims(v)) for v in m.graph.output]
        self.network.nodes = [n.name for n in m.graph.node]
        self.network.fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
        return True

class Profile:
    def __init__(self):
        self.shapes = {}
    def set_shape(self, name, min, opt, max):
        self.shapes[name] = [list(min), list(opt), list(max)]

class TimingCache:
    def __init__(self, data):
        self.data = bytes(data)
    def serialize(self):
        return self.data + b"+"

class BuilderConfig:
    def __init__(self):
        self.pools, self.flags, self.profiles, self.cache = {}, [], [], None
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.builder_optimization_level = 3
    def set_memory_pool_limit(self, pool, size):
        self.pools[pool.name] = size
    def set_flag(self, flag):
        self.flags.append(flag.name)
    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return 0
    def create_timing_cache(self, data):
        return TimingCache(data)
    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        self.cache = cache
        return True
    def get_timing_cache(self):
        return self.cache

class Builder:
    def __init__(self, logger):
        pass
    def create_network(self, flags=0):
        return Network(flags)
    def create_builder_config(self):
        return BuilderConfig()
    def create_optimization_profile(self):
        return Profile()
    def build_serialized_network(self, network, config):
        if os.environ.get("FAKE_TRT_FAIL_BUILD"):
            return None
        plan = {
            "flags": network.flags, "workspace": config.pools.get("WORKSPACE"), "builder_flags": config.flags,
            "verbosity": config.profiling_verbosity.name, "profiles": [p.shapes for p in config.profiles],
            "timing_cache_in": config.cache.data.decode() if config.cache else None, "fp16_model": network.fp16,
            "inputs": [[t.name, list(t.shape)] for t in network.inputs],
            "outputs": [[t.name, list(t.shape)] for t in network.outputs], "nodes": network.nodes,
        }
        return json.dumps(plan).encode()

class Runtime:
    def __init__(self, logger):
        pass
    def deserialize_cuda_engine(self, plan):
        try:
            return Engine(json.loads(bytes(plan)))
        except ValueError:
            return None

class Engine:
    def __init__(self, plan):
        self.plan = plan
        self.io = [(n, s, TensorIOMode.INPUT) for n, s in plan["inputs"]] + [(n, s, TensorIOMode.OUTPUT) for n, s in plan["outputs"]]
    @property
    def num_io_tensors(self):
        return len(self.io)
    def get_tensor_name(self, i):
        return self.io[i][0]
    def _find(self, name):
        return next(t for t in self.io if t[0] == name)
    def get_tensor_mode(self, name):
        return self._find(name)[2]
    def get_tensor_shape(self, name):
        return tuple(self._find(name)[1])
    def get_tensor_dtype(self, name):
        return DataType.FLOAT
    def get_tensor_location(self, name):
        return TensorLocation.DEVICE
    def create_execution_context(self):
        return Context(self)
    def create_engine_inspector(self):
        return Inspector(self)

LOG = []  # what the runtime did, for the tests

class Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.profiler = engine, {}, {}, None
    def set_input_shape(self, name, shape):
        self.shapes[name] = list(shape)
        lo, _, hi = self.engine.plan["profiles"][0][name]
        return all(a <= d <= b for a, d, b in zip(lo, shape, hi))
    def get_tensor_shape(self, name):
        if name in self.shapes:
            return tuple(self.shapes[name])
        batch = next(iter(self.shapes.values()))[0]
        shape = list(self.engine.get_tensor_shape(name))
        return tuple(batch if d < 0 else d for d in shape)
    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True
    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int) and len(self.addresses) == self.engine.num_io_tensors
        LOG.append(("execute", stream_handle, dict(self.shapes)))
        if self.profiler is not None:
            self.profiler.report_layer_time("conv1 + relu1", 0.25)
            self.profiler.report_layer_time("conv2", 0.5)
        return True

class Inspector:
    def __init__(self, engine):
        self.engine, self.execution_context = engine, None
    def get_engine_information(self, fmt):
        assert fmt == LayerInformationFormat.JSON
        return json.dumps({"Layers": [
            {"Name": "conv1 + relu1", "LayerType": "CaskConvolution", "Metadata": "[ONNX Layer: conv1]\x1f[ONNX Layer: relu1]"},
            {"Name": "conv2", "LayerType": "CaskConvolution", "Metadata": "[ONNX Layer: conv2]"}]})
'''


class FakeCuda:
    """The runtime wrapper's interface over host memory: events read a fake GPU clock
    that each enqueued run advances by 1 ms, and each copy by 0.5 ms."""

    name = "fake"

    def __init__(self):
        self.log, self.clock, self.capturing, self.graph_ops = [], 0.0, None, []
        self._host, self._next = {}, 0x1000

    def device_count(self):
        return 1

    def device_name(self, device=0):
        return "Fake GPU"

    def malloc(self, nbytes):
        self._next += nbytes + 256
        return self._next

    def free(self, ptr):
        self.log.append(("free", ptr))

    def malloc_host(self, nbytes):
        import ctypes

        buf = ctypes.create_string_buffer(nbytes)
        self._host[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf), ctypes.addressof(buf)

    def free_host(self, token):
        self._host.pop(token)

    def stream_create(self):
        return object()

    def stream_destroy(self, stream):
        self.log.append(("stream_destroy",))

    def stream_synchronize(self, stream):
        pass

    def handle(self, stream):
        return id(stream)

    def event_create(self):
        return {"t": None}

    def event_destroy(self, event):
        pass

    def event_record(self, event, stream):
        event["t"] = self.clock

    def event_synchronize(self, event):
        pass

    def event_elapsed_ms(self, start, end):
        return end["t"] - start["t"]

    def _op(self, what, ms):
        if self.capturing is not None:
            self.graph_ops.append((what, ms))
        else:
            self.clock += ms
            self.log.append((what,))

    def memcpy_async(self, dst, src, nbytes, kind, stream):
        self._op(f"copy_{kind}", 0.5)

    def begin_capture(self, stream):
        self.capturing, self.graph_ops = stream, []

    def end_capture(self, stream):
        self.capturing = None
        return list(self.graph_ops)

    def graph_instantiate(self, graph):
        return graph

    def graph_launch(self, graph_exec, stream):
        self.log.append(("graph_launch",))
        self.clock += sum(ms for _, ms in graph_exec)

    def graph_destroy(self, graph, graph_exec):
        self.log.append(("graph_destroy",))


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """The fake `tensorrt` importable here and in the build worker, and the fake CUDA runtime."""
    import types

    from hwnas.backends import cuda as cuda_mod

    mod_dir = tmp_path / "fake_trt"
    mod_dir.mkdir()
    (mod_dir / "tensorrt.py").write_text(FAKE_TENSORRT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(mod_dir), os.environ.get("PYTHONPATH")])))
    module = types.ModuleType("tensorrt")
    exec(compile(FAKE_TENSORRT, str(mod_dir / "tensorrt.py"), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    fake = FakeCuda()
    monkeypatch.setattr(cuda_mod, "api", lambda: fake)

    def execute(self, stream_handle, _orig=module.Context.execute_async_v3):  # enqueues 1 ms of work
        _orig(self, stream_handle)
        fake._op("execute", 1.0)
        return True

    module.Context.execute_async_v3 = execute
    return SimpleNamespace(module=module, cuda=fake, dir=mod_dir)


def test_fake_build_runs_the_whole_recipe_in_the_worker(fake_trt, tmp_path):
    model = make_onnx(tmp_path / "m.onnx", batch="N")
    kw = dict(cache_dir=tmp_path / "cache", gpu="Fake GPU")
    engine = trtx.build_engine(model, BuildConfig(workspace=64 << 20, batch=4), **kw)
    plan = json.loads(engine.path.read_bytes())
    assert plan["flags"] == 0 and plan["workspace"] == 64 << 20 and plan["verbosity"] == "DETAILED"
    assert plan["profiles"] == [{"x": [[1, 3, 16, 16], [4, 3, 16, 16], [4, 3, 16, 16]]}]
    assert plan["builder_flags"] == [] and plan["timing_cache_in"] == ""
    timing = next((tmp_path / "cache" / "timing").glob("*.cache"))
    assert timing.read_bytes() == b"+"
    # a second model reuses and extends the timing cache of the first build
    other = trtx.build_engine(make_onnx(tmp_path / "m2.onnx", channels=4), BuildConfig(), **kw)
    assert json.loads(other.path.read_bytes())["timing_cache_in"] == "+" and timing.read_bytes() == b"++"
    assert trtx.engine_meta(engine)["tensorrt"] == "10.8.0.43"


def test_fake_fp16_uses_the_builder_flag_on_10_and_an_fp16_model_on_11(fake_trt, tmp_path, monkeypatch):
    model = make_onnx(tmp_path / "m.onnx")
    kw = dict(cache_dir=tmp_path / "cache", gpu="Fake GPU")
    plan10 = json.loads(trtx.build_engine(model, BuildConfig(precision="fp16"), **kw).path.read_bytes())
    assert plan10["builder_flags"] == ["FP16"] and plan10["fp16_model"] is False
    monkeypatch.setenv("FAKE_TRT_VERSION", "11.0.0")
    try:
        import onnxconverter_common  # noqa: F401
    except ImportError:
        with pytest.raises(HwnasError, match="onnxconverter-common"):
            trtx.build_engine(model, BuildConfig(precision="fp16"), trt_version="11.0.0", **kw)
        return
    plan11 = json.loads(trtx.build_engine(model, BuildConfig(precision="fp16"), trt_version="11.0.0", **kw).path.read_bytes())
    assert plan11["builder_flags"] == [] and plan11["fp16_model"] is True


def test_fake_build_failures_are_one_line(fake_trt, tmp_path, monkeypatch):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    kw = dict(cache_dir=tmp_path / "cache", gpu="Fake GPU")
    with pytest.raises(HwnasError, match=r"^TensorRT cannot parse bad.onnx: 1 error: graph: failed to parse"):
        trtx.build_engine(bad, **kw)
    monkeypatch.setenv("FAKE_TRT_FAIL_BUILD", "1")
    with pytest.raises(HwnasError, match=r"^TensorRT could not build an engine for m.onnx \(build_serialized_network returned None"):
        trtx.build_engine(make_onnx(tmp_path / "m.onnx"), **kw)


def test_fake_backend_measures_with_events_and_graphs(fake_trt, tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    kw = dict(cache_dir=tmp_path / "cache")
    m = TensorrtBackend(**kw).measure(model, FAST)
    assert m.samples_ms == [1.0] * len(m.samples_ms) and m.stats["n"] >= 20  # the fake GPU clock
    assert m.fingerprint["backend"] == "tensorrt" and m.fingerprint["gpu"] == "Fake GPU"
    g = TensorrtGraphBackend(**kw).measure(model, FAST)
    assert g.median_ms == 1.0 and ("graph_launch",) in fake_trt.cuda.log and ("graph_destroy",) in fake_trt.cuda.log
    h = TensorrtBackend(h2d=True, **kw).measure(model, FAST)
    assert h.median_ms == 1.5 and h.fingerprint["timed_h2d"] is True  # one input copy inside the timing
    assert ("stream_destroy",) in fake_trt.cuda.log and not fake_trt.cuda._host  # all freed


def test_fake_dynamic_batch_runs_at_the_measured_batch(fake_trt, tmp_path):
    model = make_onnx(tmp_path / "m.onnx", batch="N")
    TensorrtBackend(cache_dir=tmp_path / "cache").measure(model, FAST, batch=4)
    assert fake_trt.module.LOG[-1][2] == {"x": [4, 3, 16, 16]}


def test_fake_layer_report(fake_trt, tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    report = TensorrtBackend(cache_dir=tmp_path / "cache").layer_report(model, runs=7)
    assert [(r["name"], r["onnx_nodes"], r["median_ms"], r["n"]) for r in report["layers"]] == [
        ("conv1 + relu1", ["conv1", "relu1"], 0.25, 7), ("conv2", ["conv2"], 0.5, 7)]
    assert report["total_median_ms"] == pytest.approx(0.75) and report["runs"] == 7
