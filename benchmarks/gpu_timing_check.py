"""Cross-check hwnas's CUDA-event timing against independent clocks, on a GPU machine.

    .venv/bin/python benchmarks/gpu_timing_check.py [--runs 200] [--batch 8] [--channels 64] [--size 128]

Each row times the same GPU work two ways:

- torch-cuda / torch-cuda-graph (hwnas runners): the median of per-run CUDA-event times, as
  the measurement protocol records them, against the wall clock of N back-to-back runs with
  one synchronisation at the end, divided by N. For GPU-bound work the two agree; where the
  CPU cannot launch kernels as fast as the GPU runs them (small eager models) the wall clock
  is longer, which is the launch overhead a CUDA graph removes.
- torch.cuda.Event against hwnas.backends.cuda events (cuda-python), recorded on the same
  stream around the same work: two event implementations, one GPU clock.
- hwnas.backends.cuda's own stream and EventTimer timing a torch (and, where CuPy is
  installed, a CuPy) workload put on that stream, against the wall clock.
- tensorrt / tensorrt-graph runners, where TensorRT is installed.

A ratio outside [0.85, 1.15] is marked CHECK. Without a GPU the script exits 2 and says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 0.15


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_timing_check: no CUDA GPU here (torch {torch.__version__} sees none); "
            "run it on a machine with an NVIDIA GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 2

    from hwnas.errors import HwnasError
    from hwnas.backends import MeasureProtocol, run_protocol
    from hwnas.backends import cuda as hcuda

    protocol = MeasureProtocol(warmup_runs=20, warmup_s=0.2, min_runs=args.runs, min_time_s=0.0)
    dtype = torch.float16 if args.precision == "fp16" else torch.float32
    layers = []
    for _ in range(args.layers):
        layers += [torch.nn.Conv2d(args.channels, args.channels, 3, padding=1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).eval()
    shape = (args.batch, args.channels, args.size, args.size)
    rows: list[tuple[str, float | None, float | None, str]] = []

    def wall_per_run(launch, sync, n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            launch()
        sync()
        return (time.perf_counter() - t0) / n * 1e3

    # 1. hwnas torch-cuda runners: protocol event median vs back-to-back wall clock
    from hwnas.torch_backends import TorchCudaBackend, TorchCudaGraphBackend

    for backend in (TorchCudaBackend(precision=args.precision), TorchCudaGraphBackend(precision=args.precision)):
        runner = backend.load((net, shape))
        try:
            event_ms = run_protocol(runner, protocol).median_ms

            def launch(r=runner):
                with torch.inference_mode(), torch.cuda.stream(r.stream):
                    r.graph.replay() if r.graph is not None else r.module(r.x)

            wall_ms = wall_per_run(launch, runner.stream.synchronize, args.runs)
        finally:
            runner.close()
        rows.append((f"{backend.name}: event median vs wall/N", event_ms, wall_ms, ""))

    module = net.to("cuda", dtype)
    x = torch.randn(*shape, device="cuda", dtype=dtype)

    def work():
        with torch.inference_mode():
            module(x)

    have_cudart = hcuda.available() == "cuda-python"
    if not have_cudart:
        rows.append(("cuda-python events", None, None, "skipped: cuda-python not installed (pip install cuda-python)"))
    else:
        # 2. torch.cuda.Event and cuda-python events around the same work on one stream
        stream = torch.cuda.Stream()
        t_start, t_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        c_start, c_end = hcuda.Event(), hcuda.Event()
        torch_ms, cudart_ms = [], []
        with torch.cuda.stream(stream):
            for i in range(args.runs + 20):
                t_start.record(stream)
                c_start.record(stream.cuda_stream)
                work()
                c_end.record(stream.cuda_stream)
                t_end.record(stream)
                c_end.synchronize()
                t_end.synchronize()
                if i >= 20:
                    torch_ms.append(t_start.elapsed_time(t_end))
                    cudart_ms.append(c_end.ms_since(c_start))
        c_start.close()
        c_end.close()
        rows.append(("cuda-python events vs torch.cuda.Event", statistics.median(cudart_ms), statistics.median(torch_ms), ""))

        # 3. hwnas.backends.cuda stream + EventTimer around torch work put on that stream
        hstream = hcuda.Stream()
        timer = hcuda.EventTimer(hstream)
        ext = torch.cuda.ExternalStream(hstream.handle)
        try:
            samples = []
            for i in range(args.runs + 20):
                timer.start()
                with torch.cuda.stream(ext):
                    work()
                dt = timer.stop()
                if i >= 20:
                    samples.append(dt * 1e3)

            def on_ext():
                with torch.cuda.stream(ext):
                    work()

            rows.append(("cuda.py EventTimer (torch work) vs wall/N", statistics.median(samples),
                         wall_per_run(on_ext, hstream.synchronize, args.runs), ""))

            # 4. the same with a CuPy workload, where CuPy is installed
            try:
                import cupy
            except ImportError:
                rows.append(("cuda.py EventTimer (CuPy work)", None, None, "skipped: CuPy not installed"))
            else:
                with cupy.cuda.ExternalStream(hstream.handle):
                    a = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)
                    b = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)

                def mm():
                    with cupy.cuda.ExternalStream(hstream.handle):
                        a @ b

                samples = []
                for i in range(args.runs + 20):
                    timer.start()
                    mm()
                    dt = timer.stop()
                    if i >= 20:
                        samples.append(dt * 1e3)
                rows.append(("cuda.py EventTimer (CuPy matmul) vs wall/N", statistics.median(samples),
                             wall_per_run(mm, hstream.synchronize, args.runs), ""))
        finally:
            timer.close()
            hstream.close()

    # 5. TensorRT runners, where TensorRT is installed
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        rows.append(("tensorrt runners", None, None, "skipped: TensorRT not installed"))
    else:
        from hwnas.backends.tensorrt.runner import TensorrtBackend, TensorrtGraphBackend

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "net.onnx"
            torch.onnx.export(net.float().cpu(), (torch.randn(*shape),), str(onnx_path), dynamo=False,
                              input_names=["input"], output_names=["output"], opset_version=18)
            for backend in (TensorrtBackend(precision=args.precision, cache_dir=Path(tmp) / "trt"),
                            TensorrtGraphBackend(precision=args.precision, cache_dir=Path(tmp) / "trt")):
                try:
                    backend.engine(onnx_path)
                    runner = backend.load(onnx_path)
                except HwnasError as e:
                    rows.append((f"{backend.name}", None, None, f"failed: {e}"))
                    continue
                try:
                    event_ms = run_protocol(runner, protocol).median_ms
                    launch = runner.graph.launch if runner.graph is not None else runner._enqueue
                    wall_ms = wall_per_run(launch, runner.stream.synchronize, args.runs)
                finally:
                    runner.close()
                rows.append((f"{backend.name}: event median vs wall/N", event_ms, wall_ms, ""))

    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"cuda-python: {'yes' if have_cudart else 'no'}; workload: {args.layers}x conv3x3 {args.channels}ch "
          f"on {shape}, {args.precision}; {args.runs} runs")
    print(f"{'check':<48} {'event ms':>10} {'other ms':>10} {'ratio':>7}  verdict")
    bad = 0
    for name, a, b, note in rows:
        if a is None or b is None:
            print(f"{name:<48} {'-':>10} {'-':>10} {'-':>7}  {note}")
            continue
        ratio = a / b if b else float("inf")
        ok = abs(ratio - 1) <= TOLERANCE
        bad += not ok
        print(f"{name:<48} {a:>10.4f} {b:>10.4f} {ratio:>7.3f}  {'ok' if ok else 'CHECK'}{'  ' + note if note else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
