"""A lookup-table build on a fleet of one worker against a fleet of two, on this machine.

A Ray head node (no device) and `hwnas worker --device cpu` processes, each pinned to a core of
its own with taskset; the job (`hwnas lut build --cluster ... --device cpu`) runs unpinned. The
same table is built twice into fresh stores: once with one worker, once with two (--repeats
times). Prints the wall time of each, the throughput ratio, and the two tables' agreement as the
absolute percentage error of each entry of the two-worker table against the one-worker table;
with repeats, the one-worker table against its repeat (the noise floor). Every build uses the
reference baseline the first build measured, as one fleet store holds one per target.

    python benchmarks/fleet.py --space proxyless --resolution 32 --width-mult 0.25 -k 1 --min-time 0.05 --repeats 2

On a machine with two cores the job's own work (ONNX export, the store) shares them with the
workers, and the two workers share caches and memory bandwidth: read the ratio as a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RAY = str(Path(sys.executable).with_name("ray"))


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def workers_up(address: str) -> int:
    out = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "hwnas-device:cpu" in line:
            return int(float(line.split("/")[1].split()[0]))
    return 0


def wait_workers(address: str, n: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while workers_up(address) != n:
        if time.monotonic() > deadline:
            sys.exit(f"fleet.py: {n} worker(s) did not join in {timeout_s} s")
        time.sleep(1)


def share_baseline(first_db: Path, db: Path) -> None:
    """The first build's reference baseline in a fresh store, as one fleet store would hold it for
    every job: tables measured against different baselines differ by the baselines' ratio."""
    import sqlalchemy as sa

    from hwnas.store import REFERENCE_BASELINES, Store

    engine = sa.create_engine(f"sqlite:///{first_db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(REFERENCE_BASELINES.c.target, REFERENCE_BASELINES.c.info)).all()
    engine.dispose()
    with Store(db) as store:
        for target, info in rows:
            store.put_reference_baseline(target, json.loads(info))


def build(args, address: str, tmp: Path, name: str) -> tuple[float, dict]:
    out = tmp / f"{name}.json"
    first = tmp / "r0-1-worker.sqlite"
    if first.exists():
        share_baseline(first, tmp / f"{name}.sqlite")
    cmd = [sys.executable, "-m", "hwnas.cli", "lut", "build", "--space", args.space, "--resolution", str(args.resolution),
           "--width-mult", str(args.width_mult), "--classes", "10", "--width-step", str(args.width_step),
           "-k", str(args.k), "--min-time", str(args.min_time), "--cluster", address, "--device", "cpu",
           "--db", str(tmp / f"{name}.sqlite"), "--out", str(out)]
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HWNAS_CACHE": str(tmp / f"job-{name}")})
    wall = time.perf_counter() - started
    if r.returncode != 0:
        sys.exit(f"fleet.py: the {name} build failed: {r.stderr.strip().splitlines()[-1]}")
    print(r.stdout.strip().splitlines()[-1], flush=True)
    return wall, json.loads(out.read_text())


def points(table: dict) -> dict[tuple, float]:
    return {(json.dumps(e["key"], sort_keys=True), m): ms for e in table["entries"] for m, ms in zip(e["mids"], e["ms"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="proxyless")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--width-step", type=int, default=4096)
    p.add_argument("-k", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=1, help="one- and two-worker builds, this many times each")
    args = p.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("fleet.py: needs two cores, one per worker")
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), "unknown")
    tmp = Path(tempfile.mkdtemp(prefix="hwnas-fleet-bench-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    # A worker that leaves is noticed in seconds (Ray's default: tens of seconds).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    procs = [start([RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                    "--disable-usage-stats", "--node-ip-address=127.0.0.1"], tmp / "head.log", env)]
    try:
        time.sleep(5)
        ratios, mapes, one_tables = [], [], []
        for rep in range(args.repeats):
            walls, tables = [], []
            for n, core in enumerate(cores[:2], 1):
                if n == 1 and len(procs) == 3:  # the second worker of the last repeat leaves: one again
                    kill(procs.pop())
                if len(procs) == n:
                    procs.append(start(["taskset", "-c", str(core), sys.executable, "-m", "hwnas.cli", "worker", "--device",
                                        "cpu", "--cluster", address, "--node-ip", "127.0.0.1"], tmp / f"worker{n}.log",
                                       {**env, "HWNAS_CACHE": str(tmp / f"worker{n}")}))
                wait_workers(address, n)
                wall, table = build(args, address, tmp, f"r{rep}-{n}-worker")
                walls.append(wall)
                tables.append(points(table))
            one, two = tables
            assert one.keys() == two.keys()
            ape = np.array([abs(two[k] - one[k]) / one[k] * 100 for k in one])
            ratios.append(walls[0] / walls[1])
            mapes.append(ape.mean())
            one_tables.append(one)
            print(f"repeat {rep + 1}: one worker (core {cores[0]}) {walls[0]:.1f} s, two workers (cores {cores[0]},{cores[1]}) "
                  f"{walls[1]:.1f} s: throughput ratio {ratios[-1]:.2f}x; two-worker vs one-worker table per point: "
                  f"MAPE {ape.mean():.1f}%, median {np.median(ape):.1f}%, 90th percentile {np.percentile(ape, 90):.1f}%",
                  flush=True)
        print(f"CPU: {cpu}; {len(one_tables[0])} table points; protocol -k {args.k} --min-time {args.min_time}; "
              f"{args.space} r{args.resolution} w{args.width_mult} --width-step {args.width_step}")
        print(f"throughput ratio over {args.repeats} repeat(s): {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"two- vs one-worker MAPE: {', '.join(f'{m:.1f}%' for m in mapes)}")
        if len(one_tables) > 1:  # the noise floor: the same one-worker build, repeated
            a, b = one_tables[0], one_tables[1]
            floor = np.array([abs(b[k] - a[k]) / a[k] * 100 for k in a])
            print(f"one-worker table vs its repeat (the noise floor): MAPE {floor.mean():.1f}%, median {np.median(floor):.1f}%")
    finally:
        for proc in reversed(procs):
            kill(proc)


if __name__ == "__main__":
    main()
