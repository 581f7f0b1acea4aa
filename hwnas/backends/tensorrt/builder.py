"""ONNX to a serialized TensorRT engine, built in a worker process and cached on disk.

A TensorRT build can take minutes, hang, or crash the process (a bad tactic, a driver
fault). So it runs in `python -m hwnas.backends.tensorrt.builder build ...` with a timeout: a
crash or a hang costs one measurement, and the error says why in one line with the tail
of the worker's log. The parent computes every cache key (engine and timing cache) from
pure functions; only the worker imports TensorRT to build.

Engines are cached by (ONNX sha256, TensorRT version, GPU name, precision, workspace,
builder config); the timing cache by (TensorRT version, GPU name, precision) and reused
across builds. Both are written atomically. This module imports no torch.

API facts used (TensorRT 10 / 11 Python API):
- create_network(0): explicit batch is the only mode since 10 (the EXPLICIT_BATCH flag is
  deprecated there and needed before 10); 11 is always strongly typed.
- OnnxParser.parse(bytes, path); on failure num_errors / get_error(i) with desc(), node(),
  and since 10 node_name() / node_operator().
- set_memory_pool_limit(MemoryPoolType.WORKSPACE, n); one optimization profile;
  create_timing_cache(bytes) + set_timing_cache(cache, ignore_mismatch=False), serialized
  after the build; profiling_verbosity DETAILED (ONNX node names in the engine inspector).
- fp16: BuilderFlag.FP16 on 10; 11 removed the precision flags, so the ONNX model is
  converted to fp16 first (onnxconverter-common, fp32 inputs and outputs kept).
- build_serialized_network returns None on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from hwnas import __version__
from hwnas.backends import cuda
from hwnas.backends.fingerprint import nvidia_gpu
from hwnas.errors import HwnasError
from hwnas.jsonutil import cache_root, content_hash, read_json, write_json

ENGINE_FORMAT = 1  # bump when the build recipe changes, so old engines are not reused
DEFAULT_WORKSPACE = 1 << 30
DEFAULT_TIMEOUT_S = 600.0  # small NAS subnets build in seconds to a minute
ERROR_PREFIX = "hwnas-error: "  # the worker's last word on a user-facing failure (exit 2)
TAIL_LINES = 6
TENSORRT_INSTALL = "pip install tensorrt, whose wheels come from NVIDIA's package index"
FP16_INSTALL = "pip install onnx onnxconverter-common"


@dataclass(frozen=True)
class BuildConfig:
    """Everything about a build besides the model, the TensorRT version and the GPU."""

    precision: str = "fp32"
    workspace: int = DEFAULT_WORKSPACE
    batch: int = 1  # opt/max batch where the ONNX batch dimension is dynamic
    optimization_level: int | None = None  # None: TensorRT's default (3)

    def __post_init__(self):
        if self.precision not in ("fp32", "fp16"):
            raise HwnasError(f"TensorRT precision must be fp32 or fp16, got {self.precision!r}")
        if isinstance(self.workspace, bool) or not isinstance(self.workspace, int) or self.workspace < 1 << 20:
            raise HwnasError(f"TensorRT workspace must be an integer of at least 1 MiB, got {self.workspace!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise HwnasError(f"TensorRT batch must be a positive integer, got {self.batch!r}")
        if self.optimization_level is not None and self.optimization_level not in range(6):
            raise HwnasError(f"TensorRT optimization level must be 0..5, got {self.optimization_level!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Engine:
    path: Path
    key: str
    cached: bool
    build_s: float  # 0 for a cache hit


# ----------------------------------------------------------------------------- keys and paths


def default_cache_dir() -> Path:
    return cache_root() / "tensorrt"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise HwnasError(f"cannot read ONNX file {path}: {e.strerror or e}") from None
    return h.hexdigest()


def engine_key(onnx_sha256: str, trt_version: str, gpu: str, config: BuildConfig) -> str:
    return content_hash(
        {
            "onnx_sha256": onnx_sha256,
            "tensorrt": trt_version,
            "gpu": gpu,
            "config": config.to_json(),
            "format": ENGINE_FORMAT,
        },
        length=24,
    )


def timing_cache_key(trt_version: str, gpu: str, precision: str) -> str:
    """Tactic timings depend on the TensorRT version, the GPU and the precision flags."""
    return content_hash({"tensorrt": trt_version, "gpu": gpu, "precision": precision})


def write_atomic(path: Path, data: bytes) -> None:
    """Write next to the target, then rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def profile_shapes(name: str, shape: Sequence[int], batch: int) -> tuple[tuple[int, ...], ...]:
    """min / opt / max of one input: the static shape three times, or 1 / batch / batch for
    a dynamic batch dimension. Any other dynamic dimension is an error."""
    dims = [int(d) for d in shape]
    for i, d in enumerate(dims):
        if d < 0 and i > 0:
            raise HwnasError(f"input {name!r} has a dynamic dimension at axis {i}; export it with a fixed shape")
    if dims and dims[0] < 0:
        rest = tuple(dims[1:])
        return (1, *rest), (batch, *rest), (batch, *rest)
    return (tuple(dims),) * 3


def format_parser_errors(model: str, errors: list[dict[str, Any]]) -> str:
    """Every ONNX parser error with its node, in one line."""
    parts = []
    for e in errors:
        where = []
        node = e.get("node")
        if isinstance(node, int) and node >= 0:  # -1: the error is not about one node
            where.append(f"node {node}")
        if e.get("node_name"):
            where.append(repr(e["node_name"]))
        if e.get("node_operator"):
            where.append(f"({e['node_operator']})")
        desc = " ".join(str(e.get("desc", "")).split())
        parts.append(f"{' '.join(where) or 'graph'}: {desc}")
    n = len(parts)
    return f"TensorRT cannot parse {model}: {n} error{'s' if n != 1 else ''}: " + "; ".join(parts)


def parser_errors(parser) -> list[dict[str, Any]]:
    """The parser's errors; node_name / node_operator exist from TensorRT 10 on."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        e: dict[str, Any] = {"desc": err.desc(), "node": err.node()}
        for attr in ("node_name", "node_operator"):
            fn = getattr(err, attr, None)
            if callable(fn):
                try:
                    e[attr] = fn()
                except Exception:  # an older binding without the field
                    pass
        out.append(e)
    return out


# ----------------------------------------------------------------------------- the worker


def log_tail(log_path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    rows = [" ".join(r.split())[:240] for r in text.splitlines() if r.strip()]
    if not rows:
        return f"(its log {log_path} is empty)"
    return f"last lines of {log_path}: " + " | ".join(rows[-lines:])


def _worker_error(log_path: Path) -> str | None:
    try:
        rows = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for row in reversed(rows):
        if row.startswith(ERROR_PREFIX):
            return row[len(ERROR_PREFIX):].strip()
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the worker and whatever it started (it leads its own process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_worker(cmd: list[str], *, timeout_s: float, log_path: Path, what: str, env: dict | None = None) -> float:
    """Run `cmd` with its output in `log_path`; return its wall time. A timeout, a crash or
    a non-zero exit is one HwnasError line: a worker's own HwnasError (exit 2 and a line
    starting ERROR_PREFIX) as it is, anything else with the tail of the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        except OSError as e:
            raise HwnasError(f"cannot start the worker for {what}: {e.strerror or e}") from None
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise HwnasError(f"{what} timed out after {timeout_s:g} s and was stopped; {log_tail(log_path)}") from None
        except BaseException:  # Ctrl-C: leave no orphaned build behind
            _kill_group(proc)
            raise
    if rc == 0:
        return time.perf_counter() - t0
    if rc == 2:
        msg = _worker_error(log_path)
        if msg:
            raise HwnasError(msg)
    if rc < 0:
        try:
            how = f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"was killed by signal {-rc}"
    else:
        how = f"exited with code {rc}"
    raise HwnasError(f"{what} {how}; {log_tail(log_path)}")


def worker_command(onnx: Path, out: Path, timing_cache: Path, config: BuildConfig) -> list[str]:
    cmd = [
        sys.executable, "-m", "hwnas.backends.tensorrt.builder", "build",
        "--onnx", str(onnx), "--out", str(out), "--timing-cache", str(timing_cache),
        "--precision", config.precision, "--workspace", str(config.workspace), "--batch", str(config.batch),
    ]
    if config.optimization_level is not None:
        cmd += ["--optimization-level", str(config.optimization_level)]
    return cmd


def _worker_env() -> dict[str, str]:
    """The worker must import this hwnas even where it is not installed (a source checkout)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("CUDA_MODULE_LOADING", "LAZY")
    return env


def gpu_name() -> str:
    """The GPU the engine is built for: nvidia-smi's name, else the CUDA runtime's."""

    found = nvidia_gpu()
    if found:
        return found["gpu"]

    return cuda.api().device_name(0)


def import_tensorrt():
    """The tensorrt module, or one HwnasError line: not installed, or installed but broken
    (a missing libnvinfer, a CUDA mismatch)."""
    try:
        import tensorrt
    except ModuleNotFoundError as e:
        if e.name != "tensorrt":
            raise HwnasError(f"TensorRT cannot be loaded (it needs the missing module {e.name})") from None
        raise HwnasError(f"TensorRT is not installed ({TENSORRT_INSTALL})") from None
    except (ImportError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HwnasError(f"TensorRT cannot be loaded ({first})") from None
    return tensorrt


def tensorrt_version() -> str:
    return import_tensorrt().__version__


def build_engine(
    onnx_path: str | Path,
    config: BuildConfig = BuildConfig(),
    *,
    cache_dir: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
    trt_version: str | None = None,
    gpu: str | None = None,
) -> Engine:
    """The engine for `onnx_path` under `config`: from the cache, or built in a worker."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise HwnasError(f"ONNX model {onnx_path} does not exist")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    trt_version = trt_version or tensorrt_version()
    gpu = gpu or gpu_name()
    digest = file_sha256(onnx_path)
    key = engine_key(digest, trt_version, gpu, config)
    path = cache_dir / "engines" / f"{key}.engine"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not force:
        return Engine(path, key, cached=True, build_s=0.0)
    timing = cache_dir / "timing" / f"{timing_cache_key(trt_version, gpu, config.precision)}.cache"
    log_path = cache_dir / "logs" / f"{key}.log"
    what = f"TensorRT engine build for {onnx_path.name}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        build_s = run_worker(
            worker_command(onnx_path, path, timing, config), timeout_s=timeout_s, log_path=log_path, what=what, env=_worker_env()
        )
    except OSError as e:
        raise HwnasError(f"cannot write the TensorRT cache in {cache_dir}: {e.strerror or e}") from None
    if not path.is_file():
        raise HwnasError(f"{what} exited cleanly but wrote no engine; {log_tail(log_path)}")
    meta = {
        "onnx": str(onnx_path), "onnx_sha256": digest, "tensorrt": trt_version, "gpu": gpu,
        "config": config.to_json(), "format": ENGINE_FORMAT, "hwnas": __version__, "build_s": build_s,
    }
    try:
        write_json(meta_path, meta)  # written last: an engine without its record is rebuilt
    except OSError as e:
        raise HwnasError(f"cannot write the TensorRT cache in {cache_dir}: {e.strerror or e}") from None
    return Engine(path, key, cached=False, build_s=build_s)


def engine_meta(engine: Engine) -> dict[str, Any]:
    return read_json(engine.path.with_suffix(".json"), "engine record")


# ----------------------------------------------------------------------------- inside the worker


def convert_to_fp16(model_bytes: bytes) -> bytes:
    """fp32 ONNX to fp16 weights and compute, fp32 inputs and outputs kept (Casts inserted),
    as TensorRT 11's strongly typed builder takes its precision from the model."""
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise HwnasError(
            "fp16 on TensorRT 11 builds from an fp16 ONNX model, and converting one needs "
            f"onnxconverter-common: {FP16_INSTALL}"
        ) from None
    model = onnx.load_from_string(model_bytes)
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # the converter raises plain exceptions on graphs it cannot handle
        raise HwnasError(" ".join(f"cannot convert the ONNX model to fp16: {e}".split())) from None
    return converted.SerializeToString()


def _trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 10


def network_flags(trt) -> int:
    """Explicit batch is a flag before TensorRT 10 and the only mode from 10 on (the flag is
    deprecated there); TensorRT 11 is strongly typed whatever the flags."""
    if _trt_major(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def has_fp16_flag(trt) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def _logger(trt):
    class StderrLogger(trt.ILogger):
        """TensorRT's warnings and errors on stderr, which the parent keeps as the build log."""

        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                label = str(severity).rsplit(".", 1)[-1]
                print(f"[TensorRT {label}] {msg}", file=sys.stderr, flush=True)

    return StderrLogger()


def build_serialized(onnx_path: Path, config: BuildConfig, timing_cache: Path | None) -> bytes:
    """Parse and build in this process (the worker). Returns the serialized engine."""
    trt = import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    model = onnx_path.read_bytes()
    fp16_flag = config.precision == "fp16" and has_fp16_flag(trt)
    if config.precision == "fp16" and not fp16_flag:
        model = convert_to_fp16(model)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model, str(onnx_path)):  # the path finds external weights
        raise HwnasError(format_parser_errors(onnx_path.name, parser_errors(parser)))

    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace)
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if config.optimization_level is not None:
        cfg.builder_optimization_level = config.optimization_level
    if fp16_flag:
        cfg.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(tensor.name, tuple(tensor.shape), config.batch))
    cfg.add_optimization_profile(profile)
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cfg.set_timing_cache(cfg.create_timing_cache(data), ignore_mismatch=False)

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, cfg)
    if plan is None:
        raise HwnasError(
            f"TensorRT could not build an engine for {onnx_path.name} "
            "(build_serialized_network returned None; its errors are in the build log)"
        )
    print(f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(memoryview(cfg.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwnas.backends.tensorrt.builder", description="Build a TensorRT engine from ONNX.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--onnx", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--timing-cache", type=Path)
    b.add_argument("--precision", default="fp32")
    b.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--optimization-level", type=int)
    args = ap.parse_args(argv)
    try:
        config = BuildConfig(args.precision, args.workspace, args.batch, args.optimization_level)
        write_atomic(args.out, build_serialized(args.onnx, config, args.timing_cache))
    except HwnasError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
