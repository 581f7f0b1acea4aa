"""Is a searched architecture more accurate than random ones of the same latency?

Takes a finished search run (its final architecture, latency model and data), draws random
architectures of the space, elasticity-scales each to the found architecture's own latency under
the same latency model (widths on the same alignment; an architecture whose width bound stops it
short is replaced by the next draw), and trains every one from scratch with the
same recipe (`hwnas.search.train.train_arch`) and the same data split, once per training seed
(--seeds K: seeds run seed .. run seed + K - 1; weights' initialisation and batch order change,
the split does not; --found-seeds trains the found one more often). Prints each architecture's
mean test accuracy, the found one's beside the mean and spread of the random ones, and the
difference in standard errors: SE = sqrt(var(found's seeds) / K_found + var(random
architectures' means) / N), so a difference above 2 SE is one that neither the training noise
nor the choice of random architectures explains.

Why the found architecture's latency and not the run's target: a search ends by calibrating its
widths on the *measured* latency, and a width bound can stop it short, so the found architecture
can sit well under the target in the model (one UNAS run: 0.293 ms in the table against a 0.34 ms
target); random architectures scaled to the target would get up to 16% more latency to spend.

With --out DIR, every architecture's result is written as `hwnas train --out` writes it, after
each seed (found.json, random_1.json, ...; test_acc is the mean over the seeds and test_acc_seeds
lists them; `hwnas report --trained` plots them), and the comparison as summary.json; a rerun into the same DIR trains only the seeds
its results lack (same architecture, data, epochs and first seed), so it resumes, and more seeds
cost only the new ones.

    .venv/bin/python benchmarks/search_vs_random.py --run runs/demo/tfnas --random 8 --epochs 10 \\
        --seeds 3 --out runs/demo/trained
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def judge(found_seeds: list[float], random_accs: list[float]) -> dict:
    """The found architecture's mean accuracy over its seeds against random architectures' mean
    accuracies: the difference in sd of the random ones and in SE (seed noise of the found one plus
    the choice of random ones, see above), and a printable `line`."""
    found_acc = statistics.mean(found_seeds)
    mean, sd = statistics.mean(random_accs), statistics.stdev(random_accs)
    seed_var = statistics.variance(found_seeds) if len(found_seeds) > 1 else 0.0
    se = (seed_var / len(found_seeds) + sd**2 / len(random_accs)) ** 0.5
    better = sum(a < found_acc for a in random_accs)
    line = (f"found {found_acc:.4f} (over {len(found_seeds)} seeds: {', '.join(f'{a:.4f}' for a in found_seeds)}) vs random mean "
            f"{mean:.4f} (sd {sd:.4f}, min {min(random_accs):.4f}, max {max(random_accs):.4f}); found beats {better} of "
            f"{len(random_accs)}; difference {found_acc - mean:+.4f} = {(found_acc - mean) / sd if sd else float('nan'):+.2f} sd "
            f"= {(found_acc - mean) / se if se else float('nan'):+.2f} SE")
    return {"found_seeds": len(found_seeds), "found_test_acc": found_acc, "found_test_acc_seeds": list(found_seeds),
            "random_test_acc": list(random_accs), "random_mean": mean, "random_sd": sd, "found_beats": better,
            "difference_se": (found_acc - mean) / se if se else None, "line": line}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished search run directory")
    p.add_argument("--random", type=int, default=8, help="random architectures of the same latency")
    p.add_argument("--epochs", type=int, default=10, help="training epochs for every architecture")
    p.add_argument("--seeds", type=int, default=1, help="trainings per architecture (training seeds from the run's seed on)")
    p.add_argument("--found-seeds", type=int, default=None, help="trainings of the found architecture (default: --seeds)")
    p.add_argument("--seed", type=int, default=0, help="random architectures' seed")
    p.add_argument("--out", type=Path, default=None, help="directory for every result (JSON)")
    args = p.parse_args(argv)
    found_trainings = args.seeds if args.found_seeds is None else args.found_seeds
    if min(args.seeds, found_trainings) < 1 or args.random < 2:
        p.error("--seeds and --found-seeds must be at least 1 and --random at least 2")

    from hwnas.data import load_dataset
    from hwnas.errors import HwnasError
    from hwnas.jsonutil import read_json, write_json
    from hwnas.search.train import train_arch
    from hwnas.spaces.elastic import elasticity_scale
    from hwnas.spaces.mbconv import Space
    from hwnas.surrogates.models import load_model

    try:
        config = read_json(args.run / "config.json")
        found = read_json(args.run / "final_arch.json")
        model = load_model(config["latency_model_file"])
        data = load_dataset(config["data"], seed=config["seed"], limit=config.get("limit"))
    except (HwnasError, KeyError, OSError) as e:
        sys.exit(f"search_vs_random: error: {args.run} is not a finished search run: {e}")
    deploy, target = model.space, config["target_ms"]
    found_ms = model.predict(deploy.validate(found))
    align = config.get("width_align", 1)
    train_space = Space(deploy.name, config["train_resolution"], deploy.width_mult, deploy.num_classes)

    candidates, draws = [], 0
    for arch in deploy.random_archs(50 * args.random, seed=args.seed):
        if len(candidates) == args.random:
            break
        draws += 1
        r = elasticity_scale(model, arch, found_ms, align=align)
        if r.bound is None:
            candidates.append(r)
    print(f"found architecture {found_ms:.4g} ms under {config['latency_model']} (target {target:.4g} ms): "
          f"{len(candidates)} random architectures scaled to it ({draws - len(candidates)} of {draws} draws stopped by the width bound)", file=sys.stderr)

    def train(row, seeds, name):
        """`row` with the first seed's result, its test accuracy replaced by the mean over `seeds`
        training seeds; written to --out after each seed, and seeds already there are reused."""
        path = args.out / name if args.out else None
        key = (deploy.validate(row["arch"]).hash, config["data"], args.epochs, config["seed"])
        done = read_json(path) if path and path.exists() else None
        if done and (done.get("arch_hash"), done.get("data"), done.get("epochs"), done.get("seed")) != key:
            done = None  # another architecture or recipe: train afresh
        accs = list(done["test_acc_seeds"]) if done else []
        for k in range(len(accs), seeds):
            r = train_arch(train_space, row["arch"], data, epochs=args.epochs, seed=config["seed"] + k,
                           show_progress=False)
            accs.append(r["test_acc"])
            seconds = (done["seconds"] if done else 0.0) + r["seconds"]
            done = {**(done or r), **row, "test_acc": statistics.mean(accs), "test_acc_seeds": accs,
                    "seconds": seconds, "target_ms": target}
            if path:
                write_json(path, done)
        return {**done, "test_acc": statistics.mean(accs[:seeds]), "test_acc_seeds": accs[:seeds]}

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    rows = [train({"kind": "found", "predicted_ms": found_ms, "arch": found},
                  found_trainings, "found.json")]
    for k, r in enumerate(candidates):
        rows.append(train({"kind": "random", "predicted_ms": r.latency_ms, "arch": r.arch.to_json()},
                          args.seeds, f"random_{k + 1}.json"))
        print(f"random {k + 1}/{len(candidates)}: test acc {rows[-1]['test_acc']:.4f}", file=sys.stderr)

    print(f"{'kind':8} {'predicted_ms':>12} {'depths':>20} {'params_m':>9} {'test_acc':>9}")
    for r in rows:
        depths = str(deploy.validate(r["arch"]).depths)
        print(f"{r['kind']:8} {r['predicted_ms']:12.4f} {depths:>20} {r['params_m']:9.3f} {r['test_acc']:9.4f}")
    verdict = judge(rows[0]["test_acc_seeds"], [r["test_acc"] for r in rows[1:]])
    print(verdict.pop("line"))
    if args.out:
        write_json(args.out / "summary.json", {
            "run": str(args.run), "target_ms": target, "matched_ms": found_ms, "epochs": args.epochs, "random": args.random,
            "seeds": args.seeds, **verdict})


if __name__ == "__main__":
    main()
