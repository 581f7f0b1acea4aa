"""A whole slot search from one configuration (hwnas.search.slot_config): the space from the
user's model, the data, the estimator, the measurer, the lookup table, the study, and the outputs.

Run directory:
    config.json     the configuration (a resumed run must be given the same one)
    study.db        the Optuna study (unless `storage` names another)
    slot_lut.json   the slot lookup table (with lookup_table: true)
    supernet.pt     the SPOS supernet's weights (estimator spos)
    trials.csv      every trial: choices, metrics, measured latency with its interval, lookup error
    pareto.csv      the accuracy / measured-latency front of the feasible trials
    final_arch.json the most accurate feasible architecture
    summary.json    counts, hypervolume and the final architecture's figures
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwnas.errors import HwnasError
from hwnas.jsonutil import content_hash, write_json
from hwnas.search.discrete import (
    METRICS,
    OPTIMIZERS,
    MetricsChain,
    check_metric_names,
    hypervolume,
    make_optimizer,
    open_study,
    pareto_mask,
    run_study,
    storage_url,
    trial_rows,
)


def check_plan(cfg: dict[str, Any]) -> None:
    """What can be refused before any work: names of the optimizer, estimator and metrics."""
    from hwnas.search.estimators import ESTIMATORS

    if cfg["optimizer"]["name"] not in OPTIMIZERS:
        raise HwnasError(f"unknown optimizer {cfg['optimizer']['name']!r}; known: {', '.join(OPTIMIZERS)}")
    if cfg["estimator"]["name"] not in ESTIMATORS:
        raise HwnasError(f"unknown estimator {cfg['estimator']['name']!r}; known: {', '.join(ESTIMATORS)}")
    check_metric_names(cfg["objectives"], "objective")
    check_metric_names(cfg["constraints"], "constraint")
    available = set(METRICS) - ({"lut_latency"} if not cfg["lookup_table"] else set())
    check_metric_names(cfg["objectives"], "objective", available)
    check_metric_names(cfg["constraints"], "constraint", available)
    if len(set(cfg["objectives"])) != len(cfg["objectives"]):
        raise HwnasError(f"objectives list a metric twice: {cfg['objectives']}")


def make_space(cfg: dict[str, Any], num_classes: int):
    from hwnas.spaces.slots import SlotSpace

    return SlotSpace(model=cfg["model"], resolution=cfg["resolution"], num_classes=num_classes,
                     width_mult=cfg["width_mult"], model_kwargs=cfg["model_kwargs"], kinds=cfg["slots"]["kinds"],
                     candidates=cfg["slots"]["candidates"])


def make_measurer(cfg: dict[str, Any]):
    """The backend section's measurer."""
    from hwnas.measure import open_measurer

    b = cfg["backend"]
    return open_measurer(b["name"], threads=b["threads"], precision=b["precision"], warmup=b["warmup"],
                         min_runs=b["min_runs"], min_time=b["min_time"], db=b["db"], processes=b["processes"],
                         reference=b["reference"], isolation=b["isolation"])


def slot_table(space, measurer, out: Path, batch: int, echo):
    from hwnas.latency.slots import SlotLatencyTable

    path = out / "slot_lut.json"
    if path.exists():
        return SlotLatencyTable.load(path, expect_space=space, expect_fingerprint=measurer.backend.fingerprint(batch))
    echo(f"building the slot lookup table for {space} ({sum(len(s.candidates) for s in space.slots)} slot choices; "
         "each distinct one measured once, cached in the store)")
    table = SlotLatencyTable.build(space, measurer, batch)
    table.save(path)
    return table


def search(cfg: dict[str, Any], out: str | Path, echo: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from hwnas.data import load_dataset
    from hwnas.search.estimators import make_estimator
    from hwnas.search.rundir import RunDir

    check_plan(cfg)
    out = Path(out)
    run = RunDir(out)
    run.start({"method": "modnas", **cfg})
    measurer = None
    try:
        data = load_dataset(cfg["data"]["name"], seed=cfg["seed"], limit=cfg["data"]["limit"])
        space = make_space(cfg, data.num_classes)
        est = cfg["estimator"]
        estimator = make_estimator(est["name"], space, data, epochs=est["epochs"], batch_size=est["batch_size"],
                                   lr=est["lr"], weight_decay=est["weight_decay"], seed=cfg["seed"],
                                   threads=cfg["train_threads"])
        optimizer = make_optimizer(cfg["optimizer"]["name"], seed=cfg["seed"],
                                   **{k: v for k, v in cfg["optimizer"].items() if k not in ("name", "trials")})
        measurer = make_measurer(cfg)
        batch = cfg["backend"]["batch"]
        table = slot_table(space, measurer, out, batch, echo) if cfg["lookup_table"] else None
        chain = MetricsChain(space, estimator, measurer, table, batch)
        directions = [METRICS[o].direction for o in cfg["objectives"]]
        url = storage_url(cfg["storage"] or str(out / "study.db"))
        study = open_study(url, content_hash({"method": "modnas", **cfg}), directions, optimizer)
        estimator.prepare(out, echo)
        run_study(study, optimizer, space, chain, cfg["objectives"], cfg["constraints"], cfg["optimizer"]["trials"],
                  echo=echo)
        return write_results(out, study, space, cfg)
    finally:
        if measurer is not None:
            measurer.close()
        run.close()


def write_results(out: Path, study, space, cfg: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    df = pd.DataFrame(trial_rows(study, space))
    df.to_csv(out / "trials.csv", index=False)
    ok = df[(df["state"] == "COMPLETE") & df["feasible"]].copy() if len(df) else df
    front = pd.DataFrame()
    hv, ref = 0.0, cfg["hypervolume_reference_ms"]
    if len(ok) and ok["accuracy"].notna().all() and ok["latency"].notna().all():
        ok = ok.drop_duplicates("arch_hash")  # a sampler may try one architecture twice; it is one point
        ok["on_front"] = pareto_mask(ok["accuracy"].to_numpy(float), ok["latency"].to_numpy(float))
        front = ok[ok["on_front"]].sort_values("latency")
        ref = ref or float(df["latency"].max() * 1.1)
        hv = hypervolume(front["accuracy"], front["latency"], ref)
    front.to_csv(out / "pareto.csv", index=False)
    summary: dict[str, Any] = {
        "method": "modnas", "model": cfg["model"], "optimizer": cfg["optimizer"]["name"],
        "estimator": cfg["estimator"]["name"], "objectives": cfg["objectives"], "constraints": cfg["constraints"],
        "trials_complete": int((df["state"] == "COMPLETE").sum()) if len(df) else 0,
        "trials_failed": int((df["state"] == "FAIL").sum()) if len(df) else 0,
        "trials_feasible": int(len(ok)), "front_size": int(len(front)),
        "hypervolume": hv, "hypervolume_reference": {"accuracy": 0.0, "latency_ms": ref},
        "target_ms": cfg["constraints"].get("latency"),
    }
    if len(ok):
        best = ok.sort_values(["accuracy", "latency"], ascending=[False, True]).iloc[0]

        arch = space.validate({"space": "slots", "choices": json.loads(best["choices"])})
        write_json(out / "final_arch.json", arch.to_json())
        lut = best.get("lut_latency")
        summary.update({
            "final_arch_hash": arch.hash, "final_trial": int(best["number"]), "accuracy": float(best["accuracy"]),
            "measured_ms": float(best["latency"]),
            "measured_ci_ms": [float(best["latency_ci_low"]), float(best["latency_ci_high"])],
            "predicted_ms": None if lut is None or (isinstance(lut, float) and np.isnan(lut)) else float(lut),
            "lookup_error_pct": float(best["lookup_error_pct"]) if "lookup_error_pct" in best and best["lookup_error_pct"] == best["lookup_error_pct"] else None,
        })
    write_json(out / "summary.json", summary)
    return summary
