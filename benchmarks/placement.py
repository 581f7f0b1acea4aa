"""Issue 15: does where the buffers lie in memory set a session's latency? (plain ONNX Runtime)

For each ONNX file: (1) `--sessions` sessions created one after another in this process, each
timed alone (median of `--runs` runs after warm-up): the spread between sessions of one file in
one process; (2) one session, the input array placed at several offsets from a 4 KiB page
boundary (the same data): the spread that the input's placement alone makes. Everything is
pinned to one core (`--core`); run it with nothing else running, and again in fresh processes
(`setarch -R` turns address randomisation off, to see whether the spread follows the layout).

    python benchmarks/placement.py MODEL.onnx [MODEL2.onnx ...] --sessions 8 --core 1
"""

import argparse
import os
import time

import numpy as np

OFFSETS = (0, 64, 512, 1024, 2048, 3072, 3584)  # bytes past a page boundary


def session(path: str, arena: bool = True):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.enable_cpu_mem_arena = arena
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def median_ms(s, name: str, x: np.ndarray, runs: int) -> float:
    for _ in range(max(20, runs // 6)):
        s.run(None, {name: x})
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        s.run(None, {name: x})
        t[i] = time.perf_counter() - t0
    return float(np.median(t) * 1e3)


def at_offset(shape, offset: int) -> np.ndarray:
    """The same random data, starting `offset` bytes past a page boundary."""
    n = int(np.prod(shape))
    buf = np.empty(n + 2048, dtype=np.float32)
    first = (-buf.ctypes.data) % 4096 // 4
    x = buf[first + offset // 4: first + offset // 4 + n].reshape(shape)
    x[...] = np.random.default_rng(0).random(shape, dtype=np.float32)
    assert x.ctypes.data % 4096 == offset
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--no-arena", action="store_true", help="sessions without ONNX Runtime's CPU memory arena")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})
    for path in args.models:
        s = session(path, not args.no_arena)
        inp = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = at_offset(shape, 1024)
        per_session = [median_ms(s, inp.name, x, args.runs)]
        for _ in range(args.sessions - 1):
            s = session(path, not args.no_arena)
            per_session.append(median_ms(s, inp.name, x, args.runs))
        per_offset = {off: median_ms(s, inp.name, at_offset(shape, off), args.runs) for off in OFFSETS}
        lo = min(per_session)
        print(f"{os.path.basename(path)} input {shape}: sessions (same input buffer) "
              f"{' '.join(f'{v / lo:.3f}' for v in per_session)} x {lo:.4g} ms, max/min {max(per_session) / lo:.3f}; "
              f"one session, input at bytes past a page {' '.join(f'{o}:{v:.4g}' for o, v in per_offset.items())} ms, "
              f"max/min {max(per_offset.values()) / min(per_offset.values()):.3f}")


if __name__ == "__main__":
    main()
