"""Is the cell a cell search found more accurate than random child graphs of the same measured
latency, each trained from scratch? (issue 20, goal 3; judged as search_vs_random.py judges TF-NAS)

    python benchmarks/darts_found_vs_random.py RUN_DIR --random 6 --seeds 2 --found-seeds 3 \\
        --epochs 20 --limit 0 --jobs 2 --db store.sqlite --out found_vs_random

RUN_DIR is a finished `hwnas search --method snas|entrannas` run. Latency is matched in the network
it deployed (config.json's `deploy`, else its `space`): the found network's latency is the run's
final measurement (summary.json's `measured_ms`), measured again here (fresh, over twice
--processes) and matched on that. Random child graphs (every edge uniform over the 8 ops, from --seed) are drawn;
those the run's cell table predicts within --prefilter of its prediction for the found network are
measured for real (ort-cpu, 1 thread, the default protocol
with --processes fresh processes, through --db), and the first --random whose measured median lies
within --tolerance of the found latency are kept. A match whose measurement is flagged (noisy,
disturbed) is kept only with --allow-flagged, and is then named so in the output: the latency
match is the comparison's premise.

Every network is then trained from scratch with `hwnas.search.train.train_arch` (SGD, cosine) at
the deployed channels and cells and --train-resolution (default: the run's training resolution),
on the run's data split (--limit: examples; 0 = all; default the run's), once per training seed
(0, 1, ...). Measuring ends before training starts, so no measurement shares a core with it;
--jobs trainings run side by side, each on one thread. Each (network, seed) result is written to
OUT/results.json as it completes and reused on a rerun with the same recipe, so the run resumes.
The comparison (OUT/summary.json, and printed) is search_vs_random's: the found network's mean
over its seeds against the random networks' means, the difference in SE =
sqrt(var(found's seeds) / K + var(random networks' means) / N).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_vs_random import judge

from hwnas.errors import HwnasError
from hwnas.jsonutil import read_json, write_json


def train_one(space_options: dict, arch: dict, data: dict, epochs: int, seed: int) -> dict:
    """One training from scratch, in a worker process (one thread)."""
    warnings.simplefilter("ignore")
    from hwnas.data import load_dataset
    from hwnas.search.train import train_arch
    from hwnas.spaces import get_space

    space = get_space("darts", **space_options)
    r = train_arch(space, arch, load_dataset(**data), epochs=epochs, seed=seed, show_progress=False)
    return {"test_acc": r["test_acc"], "params_m": r["params_m"], "seconds": r["seconds"]}


def match_random(args, deploy, table, found) -> tuple[dict, list[dict], dict]:
    """The found network measured here, and random child graphs whose measured latency lies within
    --tolerance of it (measured alike, in this run: the found network's own final measurement was
    taken under another protocol, on another day's machine)."""
    from hwnas.backends.protocol import usable
    from hwnas.measure.measurer import open_measurer
    from hwnas.measure.networks import measure_arch

    rng = np.random.default_rng(args.seed)
    kept, counts = [], {"drawn": 0, "measured": 0, "flagged": 0, "outside_tolerance": 0}
    with open_measurer("ort-cpu", db=args.db, processes=args.processes) as measurer:
        # the anchor of every match: fresh, over twice the processes of a random network
        m = measure_arch(measurer.with_processes(2 * args.processes), deploy, found, force=True).measurement
        print(f"found {found.hash}: measured {m.median_ms:.4f} ms here (95% CI {m.ci95_ms[0]:.4f}-{m.ci95_ms[1]:.4f}; "
              f"flags: {','.join(m.flags) or 'none'})", file=sys.stderr)
        if not (args.allow_flagged or usable(m.flags)):
            sys.exit(f"darts_found_vs_random: error: the found network's measurement is flagged {m.flags}; "
                     "rerun on a quieter machine, or with --allow-flagged")
        found_ms = m.median_ms
        matched = {"measured_ms": m.median_ms, "ci95_ms": m.ci95_ms, "flags": m.flags}
        while len(kept) < args.random and counts["drawn"] < args.max_draws:
            counts["drawn"] += 1
            arch = deploy.sample(rng)
            if abs(table.predict(arch) / table.predict(found) - 1) > args.prefilter:
                continue
            m = measure_arch(measurer, deploy, arch).measurement
            counts["measured"] += 1
            flagged = not usable(m.flags)
            counts["flagged"] += flagged
            inside = abs(m.median_ms / found_ms - 1) <= args.tolerance
            counts["outside_tolerance"] += not inside
            print(f"draw {counts['drawn']}: measured {m.median_ms:.4f} ms (95% CI {m.ci95_ms[0]:.4f}-{m.ci95_ms[1]:.4f})"
                  f"{' flagged ' + ','.join(m.flags) if m.flags else ''}: {'kept' if inside and (args.allow_flagged or not flagged) else 'not kept'}",
                  file=sys.stderr)
            if inside and (args.allow_flagged or not flagged):
                kept.append({"arch": arch.to_json(), "arch_hash": arch.hash, "measured_ms": m.median_ms,
                             "ci95_ms": m.ci95_ms, "flags": m.flags})
    return matched, kept, counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--random", type=int, default=6, help="random child graphs of the same measured latency")
    ap.add_argument("--seeds", type=int, default=2, help="trainings of each random network")
    ap.add_argument("--found-seeds", type=int, default=None, help="trainings of the found network (default --seeds)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--train-resolution", type=int, default=None, help="default: the run's training resolution")
    ap.add_argument("--limit", type=int, default=None, help="data examples (0 = all; default: the run's)")
    ap.add_argument("--tolerance", type=float, default=0.03, help="relative window of the random networks' measured latency")
    ap.add_argument("--prefilter", type=float, default=0.06, help="relative window of the cell table's prediction, before measuring")
    ap.add_argument("--allow-flagged", action="store_true", help="keep matches whose measurement is flagged")
    ap.add_argument("--processes", type=int, default=5, help="fresh measuring processes per network")
    ap.add_argument("--max-draws", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="random child graphs' seed")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side (one thread each)")
    ap.add_argument("--db", type=Path, default=None, help="measurement store (default: in memory)")
    ap.add_argument("--out", type=Path, required=True, help="directory for results.json and summary.json")
    args = ap.parse_args(argv)
    found_seeds = args.seeds if args.found_seeds is None else args.found_seeds
    if min(args.seeds, found_seeds, args.epochs, args.jobs) < 1 or args.random < 2:
        ap.error("--seeds, --found-seeds, --epochs and --jobs must be at least 1 and --random at least 2")
    if not (0 < args.tolerance <= args.prefilter < 1):
        ap.error("need 0 < --tolerance <= --prefilter < 1")
    warnings.simplefilter("ignore")

    from hwnas.latency.cells import CellLatencyTable
    from hwnas.spaces import get_space

    try:
        config = read_json(args.run / "config.json", "run config")
        summary = read_json(args.run / "summary.json", "run summary")
        options = {k: v for k, v in config.get("deploy", config["space"]).items() if k != "space"}
        deploy = get_space("darts", **options)
        found = deploy.validate(read_json(args.run / "final_arch.json", "final architecture"))
        table = CellLatencyTable.load(config["latency_model_file"], expect_space=deploy)
    except (HwnasError, KeyError, OSError) as e:
        sys.exit(f"darts_found_vs_random: error: {args.run} is not a finished cell search run: {e}")
    train_options = {**options, "resolution": args.train_resolution or config["space"]["resolution"]}
    limit = config.get("limit") if args.limit is None else (args.limit or None)
    data = {"spec": config["data"], "seed": config.get("seed", 0), "limit": limit}
    recipe = {"epochs": args.epochs, "space": train_options, "data": data}
    print(f"found {found.hash} at {deploy}: the run measured {summary['measured_ms']:.4f} ms "
          f"(flags: {','.join(summary.get('measured_flags') or []) or 'none'})", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    done = read_json(results_path, "results") if results_path.exists() else {"recipe": recipe, "runs": {}}
    if done["recipe"] != recipe:
        sys.exit(f"darts_found_vs_random: error: {results_path} holds another recipe ({done['recipe']}); use another --out")
    matched, randoms, counts = match_random(args, deploy, table, found)
    if len(randoms) < 2:
        sys.exit(f"darts_found_vs_random: error: only {len(randoms)} random networks matched in {counts['drawn']} draws ({counts})")
    nets = [{"kind": "found", "arch": found.to_json(), "arch_hash": found.hash, **matched, "seeds": found_seeds,
             "run_measured_ms": summary["measured_ms"]}]
    nets += [{"kind": "random", **r, "seeds": args.seeds} for r in randoms]

    todo = [(n, s) for n in nets for s in range(n["seeds"]) if f"{n['arch_hash']}:{s}" not in done["runs"]]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_one, train_options, n["arch"], data, args.epochs, s): (n, s) for n, s in todo}
        for k, f in enumerate(as_completed(futures), 1):
            n, s = futures[f]
            result = {"kind": n["kind"], "seed": s, **f.result()}
            done["runs"][f"{n['arch_hash']}:{s}"] = result
            write_json(results_path, done)
            print(f"trained {k}/{len(todo)}: {n['kind']} {n['arch_hash']} seed {s}: test acc {result['test_acc']:.4f}",
                  file=sys.stderr)

    print(f"{'kind':8} {'arch':18} {'measured_ms':>11} {'flags':>10} {'params_m':>9} {'test_acc':>9} seeds")
    for n in nets:
        runs = [done["runs"][f"{n['arch_hash']}:{s}"] for s in range(n["seeds"])]
        n["test_acc_seeds"] = [r["test_acc"] for r in runs]
        n["params_m"] = runs[0]["params_m"]
        print(f"{n['kind']:8} {n['arch_hash']:18} {n['measured_ms']:11.4f} {','.join(n['flags']) or '-':>10} "
              f"{n['params_m']:9.3f} {statistics.mean(n['test_acc_seeds']):9.4f} "
              f"{' '.join(f'{a:.4f}' for a in n['test_acc_seeds'])}")
    verdict = judge(nets[0]["test_acc_seeds"], [statistics.mean(n["test_acc_seeds"]) for n in nets[1:]])
    print(verdict.pop("line"))
    print(f"matching: {counts['drawn']} drawn, {counts['measured']} measured, {counts['flagged']} of them flagged, "
          f"{counts['outside_tolerance']} outside ±{args.tolerance:.0%}")
    write_json(args.out / "summary.json", {"run": str(args.run), "deploy": options, "recipe": recipe,
                                           "tolerance": args.tolerance, "matching": counts,
                                           "networks": nets,
                                           **verdict})


if __name__ == "__main__":
    main()
