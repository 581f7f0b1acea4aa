"""Every search method on one hardware target, side by side: does each find architectures more
accurate than random ones of the same latency, does it land on its target, at what cost?

For each method, target and search seed it runs `hwnas search` into WORK/<method>/<target>/seed<k>
and then `benchmarks/search_vs_random.py` on the run (random architectures elasticity-scaled to
the found architecture's latency under the same latency model, every architecture trained from
scratch with one recipe). It then pools over the search seeds, per method and target:

- found accuracy (mean over seeds) against the random mean, and the difference in standard
  errors, SE = sqrt(var(found) / n_found + var(random) / n_random);
- the final architecture's measured latency against the target (mean and worst |distance|, over
  the runs whose final measurement is not flagged; the flagged ones are counted);
- the lookup error of the run's latency model (mean, over the same runs);
- the search's wall time (mean).

One table, WORK/search_quality.csv, which `hwnas report --quality` renders; a run of some methods
replaces their rows and keeps the others', so methods run apart end in one table. Every step is
kept in WORK and a rerun skips what is finished, so an interrupted comparison resumes and a
finished one reruns in seconds.

    python benchmarks/search_quality.py --work runs/quality --lut runs/lut224.json \\
        --data digits-translated --targets 2.0,2.6 --seeds 3 --epochs 12 --train-epochs 10 --random 8

Methods: tfnas-lut (TF-NAS on the table), tfnas-corrected (on --corrected, a fitted model),
unas-true (UNAS on the measured latency), unas-lut (UNAS on the table), unas-corrected (UNAS on
--corrected).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "tfnas-lut": ["--method", "tfnas"],
    "tfnas-corrected": ["--method", "tfnas"],
    "unas-true": ["--method", "unas", "--true-latency"],
    "unas-lut": ["--method", "unas"],
    "unas-corrected": ["--method", "unas"],
}


def search_options(args, method: str, target: float, seed: int) -> list[str]:
    """The options that decide a search (not where it writes or which store caches its measurements)."""
    model = args.corrected if method.endswith("-corrected") else args.lut
    return [*METHODS[method], "--target", str(target), "--lut", str(Path(model).resolve()), "--data", args.data,
            "--seed", str(seed), "--epochs", str(args.epochs), "--warmup-epochs", str(args.warmup_epochs),
            *args.size.split(), *args.search_args.split(), *(["--limit", str(args.limit)] if args.limit else [])]


def reused(run: Path, what: str, record: Path, expected: dict) -> bool:
    """Whether a finished step can be reused: a record of other settings is refused with one line,
    so a rerun with other --search-args, epochs or random count never reports the old results."""
    if not (run / what).exists():
        return False
    if record.exists():
        kept = {k: v for k, v in json.loads(record.read_text()).items() if k in expected}
        differing = [k for k in expected if k in kept and kept[k] != expected[k]]
        if differing:
            k = differing[0]
            sys.exit(f"search_quality: {run} was run with {k} {kept[k]!r}, not {expected[k]!r}; give another --work")
    return True


def run_search(args, method: str, target: float, seed: int, run: Path) -> float | None:
    """The search's wall time in seconds (kept beside the run; None if it was finished before timing)."""
    timing, options = run / "wall.json", search_options(args, method, target, seed)
    if reused(run, "summary.json", timing, {"search_options": options}):
        return json.loads(timing.read_text())["seconds"] if timing.exists() else None
    cmd = [sys.executable, "-m", "hwnas.cli", "search", *options, "--out", str(run)]
    if args.db:
        cmd += ["--db", str(args.db)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"search_quality: {method} at {target} ms, seed {seed} failed: {done.stderr.strip().splitlines()[-1:]}")
    seconds = time.perf_counter() - t0
    timing.write_text(json.dumps({"seconds": seconds, "search_options": options}))
    return seconds


def compare(args, run: Path) -> dict:
    out = run / "trained"
    if not reused(out, "summary.json", out / "summary.json", {"epochs": args.train_epochs, "random": args.random}):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "search_vs_random.py"), "--run", str(run), "--random",
               str(args.random), "--epochs", str(args.train_epochs), "--seeds", "1", "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"search_quality: comparison of {run} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "summary.json").read_text())


def pooled(method: str, target: float, runs: list[tuple[dict, dict, float | None]]) -> dict:
    found = [c["found_test_acc"] for _, c, _ in runs]
    rand = [a for _, c, _ in runs for a in c["random_test_acc"]]
    diff = statistics.mean(found) - statistics.mean(rand)
    var_found = statistics.variance(found) if len(found) > 1 else 0.0
    se = (var_found / len(found) + statistics.variance(rand) / len(rand)) ** 0.5
    from hwnas.backends.protocol import usable

    landed = [s for s, _, _ in runs if s.get("measured_distance_to_target_pct") is not None]
    # a landing whose final measurement is flagged says nothing about landing: counted, not pooled
    clean = [s for s in landed if usable(s.get("measured_flags"))]
    dist = [s["measured_distance_to_target_pct"] for s in clean]
    lookup = [s["lookup_error_pct"] for s in clean if s.get("lookup_error_pct") is not None]
    walls = [w for _, _, w in runs if w is not None]
    return {
        "method": method, "target_ms": target, "seeds": len(runs), "found_acc": statistics.mean(found),
        "random_acc": statistics.mean(rand), "n_random": len(rand), "difference": diff,
        "difference_se": diff / se if se else None,
        "measured_vs_target_pct": statistics.mean(dist) if dist else None,
        "worst_measured_vs_target_pct": max(dist, key=abs) if dist else None,
        "landings_flagged": len(landed) - len(dist),
        "lookup_error_pct": statistics.mean(lookup) if lookup else None,
        "wall_s": statistics.mean(walls) if walls else None,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--lut", type=Path, required=True, help="the lookup table every method starts from")
    ap.add_argument("--corrected", type=Path, default=None, help="a fitted latency model, for the -corrected methods")
    ap.add_argument("--methods", default="tfnas-lut,unas-true,unas-lut", help=f"of {', '.join(METHODS)}")
    ap.add_argument("--targets", required=True, help="comma-separated ms")
    ap.add_argument("--seeds", type=int, default=3, help="search seeds 0..K-1 per method and target")
    ap.add_argument("--data", default="digits-translated")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--train-epochs", type=int, default=10, help="from-scratch training of every architecture")
    ap.add_argument("--random", type=int, default=8, help="random architectures per run")
    ap.add_argument("--size", default="--space tfnas --resolution 224 --width-mult 0.5",
                    help="the space options the table was built with")
    ap.add_argument("--search-args", default="", help="more `hwnas search` options, e.g. '--processes 1'")
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    corrected = [m for m in methods if m.endswith("-corrected")]
    if corrected and args.corrected is None:
        ap.error(f"{corrected[0]} needs --corrected MODEL.json")
    try:
        targets = [float(t) for t in args.targets.split(",")]
    except ValueError:
        ap.error(f"--targets must be comma-separated numbers, got {args.targets!r}")
    if args.seeds < 1 or args.random < 2 or any(not t > 0 for t in targets):
        ap.error("--seeds >= 1, --random >= 2 and positive targets, please")

    import pandas as pd

    rows = []
    for method in methods:
        for target in targets:
            runs = []
            for seed in range(args.seeds):
                run = args.work / method / f"{target:g}" / f"seed{seed}"
                run.mkdir(parents=True, exist_ok=True)
                wall = run_search(args, method, target, seed, run)
                summary = json.loads((run / "summary.json").read_text())
                runs.append((summary, compare(args, run), wall))
                print(f"{method} {target:g} ms seed {seed}: measured {summary.get('measured_ms')} ms, "
                      f"found {runs[-1][1]['found_test_acc']:.4f} vs random {runs[-1][1]['random_mean']:.4f}", file=sys.stderr)
            rows.append({**pooled(method, target, runs), "search_args": args.search_args})
    path = args.work / "search_quality.csv"
    table = pd.DataFrame(rows)
    if path.exists():  # the rows of methods and targets not run this time stay
        kept = pd.read_csv(path)
        ran = set(zip(table["method"], table["target_ms"]))
        kept = kept[[(m, t) not in ran for m, t in zip(kept["method"], kept["target_ms"])]]
        table = pd.concat([kept, table], ignore_index=True)
    table = table.sort_values(["method", "target_ms"], kind="stable")
    table.to_csv(path, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
