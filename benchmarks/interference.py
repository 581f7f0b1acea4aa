"""What a training job beside the measurement does to it, by where the job runs.

One subnet is measured (k fresh processes, the reference timed beside it) while a training-like
job (a torch training loop, one thread) runs: nowhere, on the other core (--isolation pin), on
the measured core itself (what an unpinned search did: the OS time-slices the two), and, as a
check of the reference, on the measured core with the reference switched off. Printed per case:
the raw median and p90 of the timed runs, the share of runs over twice the quiet median (a run
the scheduler interrupted), the reported latency, its CI, and the flags.

    python benchmarks/interference.py --resolution 112 --width-mult 0.5
"""

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repeatability import TRAINING_JOB  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=2, help="every case this many times, in turn")
    args = ap.parse_args()

    import tempfile

    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.backends.system import cpu_model
    from hwnas.measure import Measurer, isolation_cores
    from hwnas.spaces.mbconv import Space
    from hwnas.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="interference-"))
    space = Space("tfnas", resolution=args.resolution, width_mult=args.width_mult, num_classes=10)
    arch = space.random_archs(1, seed=args.seed, align=4)[0]
    mode, cpus, own = isolation_cores("pin", None, get_backend("ort-cpu"))
    base = MeasureProtocol(min_time_s=args.min_time, processes=args.k)
    cases = [("quiet", None, base), ("job on the other core (pin)", own, base),
             ("job on the measured core", cpus, base), ("job on the measured core, no reference", cpus,
                                                         replace(base, reference=False))]
    print(f"cpu: {cpu_model()}; worker on core(s) {cpus}, this process on {own}; {space}, subnet {arch.hash}")
    baseline, quiet_median = None, None
    rows = {name: [] for name, _, _ in cases}
    for rep in range(args.repeats):
        for i, (name, job_cpus, protocol) in enumerate(cases):
            m = Measurer(get_backend("ort-cpu"), Store(tmp / f"{rep}-{i}.sqlite"), protocol, cpus=cpus, own_cpus=own,
                         isolation="pin")
            if baseline is None:
                baseline = m.measure_baseline()["baseline_ms"]
            m._baseline = baseline if protocol.reference else None
            job = None
            if job_cpus is not None:
                job = subprocess.Popen([sys.executable, "-c", TRAINING_JOB],
                                       preexec_fn=lambda c=job_cpus: os.sched_setaffinity(0, c))
                time.sleep(1.0)
            try:
                r = m.arch(space, arch).measurement
            finally:
                if job is not None:
                    job.kill()
                    job.wait()
                m.close()
            s = np.array(r.samples_ms)
            if quiet_median is None:
                quiet_median = float(np.median(s))
            rows[name].append((float(np.median(s)), float(np.percentile(s, 90)), float((s > 2 * quiet_median).mean()),
                               r.stats["median_ms"], r.ci95_ms, r.flags, r.reference_ratio))
    print(f"reference baseline {baseline:.4f} ms; quiet raw median {quiet_median:.4f} ms")
    print(f"{'case':42s} {'raw med':>8s} {'raw p90':>8s} {'>2x':>6s} {'latency':>8s} {'95% CI':>17s} {'ref x':>6s}  flags")
    for name, rs in rows.items():
        for raw, p90, slow, lat, ci, flags, ratio in rs:
            ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            ratio_text = f"{ratio:.2f}" if ratio else "-"
            print(f"{name:42s} {raw:8.3f} {p90:8.3f} {slow:6.1%} {lat:8.3f} {ci_text:>17s} {ratio_text:>6s}  "
                  f"{','.join(flags) or '-'}")


if __name__ == "__main__":
    main()
