"""What the searches on the darts cell space (SNAS, EnTranNAS) share beyond the loop every search
shares (`hwnas.search.loop`): the temperature schedule, each epoch's description of the derived network
(costs, table latency, measured every K epochs), accuracy with batch statistics, and the final
measurement and summary."""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch
from tqdm import tqdm

from hwnas.errors import HwnasError
from hwnas.search import loop
from hwnas.search.loop import SearchState
from hwnas.search.rundir import RunDir
from hwnas.backends.protocol import usable
from hwnas.spaces.darts import CELL_TYPES, EDGES, PRIMITIVES, DartsSpace
from hwnas.measure.networks import measure_arch
from hwnas.validate import is_finite_number as num
from hwnas.validate import is_int
from hwnas.validate import require as check


def check_training_settings(config) -> None:
    """The training settings SNAS's and EnTranNAS's configurations share: epochs, batch, rates,
    temperatures, weight decays, clipping, measurement cadence, threads, seed and landing rounds;
    HwnasError names a bad one."""

    check(is_int(config.epochs) and config.epochs >= 1, f"epochs must be a positive integer, got {config.epochs!r}")
    check(is_int(config.batch_size) and config.batch_size >= 2, f"batch size must be an integer >= 2, got {config.batch_size!r}")
    for name in ("lr", "arch_lr", "tau", "tau_min"):
        check(num(getattr(config, name)) and getattr(config, name) > 0, f"{name} must be positive, got {getattr(config, name)!r}")
    for name in ("lr_min", "momentum", "weight_decay", "arch_weight_decay", "grad_clip"):
        check(num(getattr(config, name)) and getattr(config, name) >= 0, f"{name} must be >= 0, got {getattr(config, name)!r}")
    check(config.tau_min <= config.tau, f"tau_min {config.tau_min} must not exceed tau {config.tau}")
    check(is_int(config.measure_every) and config.measure_every >= 0,
          f"measure-every must be an integer >= 0, got {config.measure_every!r}")
    check(is_int(config.final_sessions) and 1 <= config.final_sessions <= 100, "final sessions must be in [1, 100]")
    check(is_int(config.train_threads) and 1 <= config.train_threads <= 256, "training threads must be in [1, 256]")
    check(is_int(config.seed), f"seed must be an integer, got {config.seed!r}")
    check(is_int(config.land_rounds) and 1 <= config.land_rounds <= 10,
          f"land rounds must be in [1, 10], got {config.land_rounds!r}")


def check_cell_search(space: DartsSpace, deploy: DartsSpace, data, table, needs_table: bool) -> None:
    """What a cell search checks before it starts: the data's classes, the deployment space (the
    same cell, any size), and the cell table (needed for a latency cost) of the deployment space."""

    if space.num_classes != data.num_classes:
        raise HwnasError(f"the space has {space.num_classes} classes but the data has {data.num_classes}")
    if not isinstance(deploy, DartsSpace):
        raise HwnasError(f"cells searched in the darts space deploy in a darts space, not {deploy}")
    if needs_table and table is None:
        raise HwnasError("the latency cost needs a cell latency table")
    if table is not None and table.space.config != deploy.config:
        raise HwnasError(f"the cell latency table is for {table.space}, not {deploy}")


def annealed(start: float, end: float, epoch: int, epochs: int, kind: str) -> float:
    """Temperature of epoch `epoch` (0-based): `start` at the first, `end` at the last, linear or
    exponential ("exp": start * (end / start) ** (epoch / (epochs - 1)))."""
    f = epoch / (epochs - 1) if epochs > 1 else 0.0
    f = min(max(f, 0.0), 1.0)
    if kind == "linear":
        return start + f * (end - start)
    return start * (end / start) ** f


def epoch_batches(state: SearchState, cfg, data, resolution: int, show_progress: bool):
    """(progress bar, this epoch's search-train batches, endless shuffled search-val batches).
    Before each train batch the weights' learning rate is set on a cosine from cfg.lr to
    cfg.lr_min over the whole run (DARTS's schedule)."""

    bs, steps = cfg.batch_size, math.ceil(data.size("train") / cfg.batch_size)
    bar = tqdm(data.batches("train", bs, resolution, shuffle=True, generator=state.data_gen), total=steps,
               desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="step", file=sys.stderr, leave=False,
               disable=not show_progress, dynamic_ncols=True)

    def train():
        for step, batch in enumerate(bar):
            t = state.epoch * steps + step
            for g in state.opt_w.param_groups:
                g["lr"] = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t / (cfg.epochs * steps)))
            yield batch

    def val():
        while True:
            yield from data.batches("val", bs, resolution, shuffle=True, generator=state.data_gen)

    return bar, train(), val()


def run_epochs(run: RunDir, resume: bool, state: SearchState, epochs: int, train_epoch: Callable[[], dict[str, Any]],
               derive: Callable[[], dict[str, Any]], extras: Callable[[Any], dict[str, Any]], space: DartsSpace,
               table, measurer, measure_every: int, measure_batch: int, stop_after_epoch: int | None,
               echo: Callable[[str], None], line: Callable[[dict[str, Any]], str],
               on_measured: Callable[[dict[str, Any]], None] | None = None):
    """The shared loop (`hwnas.search.loop`), each epoch's derived cell network described (`extras`
    adds the method's own figures) and measured every `measure_every` epochs (then
    `on_measured(record)` may act on it before the checkpoint). Returns the final derived
    architecture, or None when stopped after `stop_after_epoch`."""

    def after_epoch() -> dict[str, Any]:
        arch = space.validate(derive())
        record = {**describe(space, arch, table), **extras(arch)}
        if measurer is not None and measure_every and state.epoch % measure_every == 0:
            m = measure(measurer, space, arch, measure_batch)
            record["measured_ms"], record["measured_flags"] = m.stats["median_ms"], list(m.flags or [])
            if on_measured is not None:
                on_measured(record)
        return record

    def full_line(record: dict[str, Any]) -> str:
        return (line(record) + (f", table {record['table_ms']:.4g} ms" if "table_ms" in record else "")
                + (f", measured {record['measured_ms']:.4g} ms" if "measured_ms" in record else ""))

    if not loop.run_epochs(run, resume, state, epochs, train_epoch, after_epoch, full_line, echo, stop_after_epoch):
        return None
    return space.validate(derive())


def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], net: torch.nn.Module, data, resolution: int,
             split: str = "val") -> float:
    """Accuracy of `forward` on a split. BatchNorm uses batch statistics (train mode, no
    gradient): the running ones were gathered under other mixtures or sub-graphs."""
    net.train()
    correct = n = 0
    with torch.no_grad():
        for x, y in data.batches(split, 256, resolution):
            correct += int((forward(x).argmax(1) == y).sum())
            n += y.numel()
    return correct / n if n else float("nan")


def describe(space: DartsSpace, arch, table) -> dict[str, Any]:
    """The derived network's costs (and table latency, with a table)."""
    c = space.costs(arch)
    d = {"arch": arch.to_json(), "arch_hash": arch.hash, "genotype": arch.genotype(),
         "params_m": c["params"] / 1e6, "macs_m": c["macs"] / 1e6, "mac_m": c["mac"] / 1e6,
         "active_nodes": {k: len(arch.cell(k).concat) for k in CELL_TYPES}}
    if table is not None:
        d["table_ms"] = table.predict(arch)
    return d


def measure(measurer, space: DartsSpace, arch, batch: int, force: bool = False):
    """The derived network's Measurement (its median and flags)."""

    return measure_arch(measurer, space, arch, batch, force).measurement


def land(space: DartsSpace, arch, log_probs: dict[str, torch.Tensor], table, target_ms: float,
         tolerance: float = 0.005, max_steps: int = 200):
    """The child graph the table reads within `tolerance` of `target_ms` that gives up least of
    the search's log-probability, greedily: from `arch`, one edge's op changed at a time (in the
    normal or the reduction genotype, so in every cell of that type), each time the change that
    closes the most of the table's gap to the target per nat of log-probability given up (a change
    that gains probability and closes the gap comes first), until the table reads within
    `tolerance` or no change closes the gap. `log_probs[kind]` is (edges, ops); an op the search
    gives no probability (-inf) is never taken, and an edge whose current op has none is never
    changed (EnTranNAS: no `none` candidate, so its edges stay as derived). Returns the child and
    the table's reading after each change."""

    arch = space.validate(arch)
    current = table.predict(arch)
    steps = []
    while abs(current / target_ms - 1) > tolerance and len(steps) < max_steps:
        doc, best = arch.to_json(), None
        for kind in CELL_TYPES:
            for e, (j, i) in enumerate(EDGES):
                now = PRIMITIVES.index(doc[f"{kind}_edges"][j][i])
                if not torch.isfinite(log_probs[kind][e, now]):
                    continue
                for o, op in enumerate(PRIMITIVES):
                    if o == now or not torch.isfinite(log_probs[kind][e, o]):
                        continue
                    edges = [list(row) for row in doc[f"{kind}_edges"]]
                    edges[j][i] = op
                    try:
                        child = space.validate({**doc, f"{kind}_edges": edges})
                    except HwnasError:  # a cell left without an active node
                        continue
                    ms = table.predict(child)
                    closed = abs(current - target_ms) - abs(ms - target_ms)
                    if closed <= 0:
                        continue
                    given_up = float(log_probs[kind][e, now] - log_probs[kind][e, o])
                    score = closed / max(given_up, 1e-6)
                    if best is None or score > best[0]:
                        best = (score, child, ms, f"{kind} edge {i}->{j + 2}: {PRIMITIVES[now]} -> {op}")
        if best is None:
            break
        _, arch, current, change = best
        steps.append({"change": change, "table_ms": current})
    return arch, steps


def land_search(space: DartsSpace, arch, log_probs: dict[str, torch.Tensor], table, target_ms: float, measurer,
                batch: int, rounds: int, child_accuracy: Callable[[Any], float], log: list[dict[str, Any]],
                echo=print) -> tuple[Any, dict[str, Any]]:
    """A search's `--land`: `land_measured` from its derived child, the first round aimed where the
    search's last usable measurement puts the table (`measured_table_target` of the run's `log`),
    then the summary's `landing` record: every round, and what landing cost in validation accuracy
    with the supernet's weights (`child_accuracy(arch)`) for the derived and the landed child."""
    landed, records = land_measured(space, arch, log_probs, table, target_ms, measurer, batch, rounds, echo=echo,
                                    table_target=measured_table_target(log, target_ms))
    return landed, {"landing": {"derived_arch_hash": arch.hash, "rounds": records,
                                "derived_val_acc": child_accuracy(arch), "landed_val_acc": child_accuracy(landed)}}


def measured_table_target(log: list[dict[str, Any]], target_ms: float) -> float | None:
    """target_ms * table / measured at the last derived network the search measured usably (the
    table's error there taken out), or None when no measurement was usable: without it a derived
    child already measured on the target would first be landed on the table's own reading of it."""
    for record in reversed(log):
        if "measured_ms" in record and usable(record["measured_flags"]):
            return target_ms * record["table_ms"] / record["measured_ms"]
    return None


def land_measured(space: DartsSpace, arch, log_probs: dict[str, torch.Tensor], table, target_ms: float, measurer,
                  batch: int, rounds: int, tolerance: float = 0.02, echo=print, table_target: float | None = None):
    """`land` on the table, then on the measured latency: each round lands the search's child on
    a table target, measures the landed child (the protocol's k processes) and, while it reads
    outside `tolerance` of `target_ms`, sets the next round's table target to
    target_ms * table / measured. A flagged measurement is taken again over twice the processes;
    flagged still, it ends the rounds (it may not calibrate). `table_target`: the first round's
    (default `target_ms`), e.g. where the search's own calibration left it.
    Returns the round `choose_round` keeps (else the last landed child), and every round's record;
    the kept one has `"kept": True`."""

    table_target, records, children = table_target or target_ms, [], []
    for r in range(rounds):
        landed, steps = land(space, arch, log_probs, table, table_target)
        record = {"round": r + 1, "table_target_ms": table_target, "changes": len(steps),
                  "table_ms": steps[-1]["table_ms"] if steps else table.predict(landed), "arch_hash": landed.hash}
        records.append(record)
        children.append(landed)
        if measurer is None:
            return landed, records
        m = measure(measurer, space, landed, batch)
        if not usable(m.flags):  # once more over twice the processes (the store's are kept): a narrower interval
            m = measure(measurer.with_processes(2 * measurer.protocol.processes), space, landed, batch)
        median = m.stats["median_ms"]
        record.update(measured_ms=median, measured_ci95_ms=list(m.ci95_ms or [median, median]),
                      measured_flags=list(m.flags or []), measured_processes=len(m.processes) or 1)
        distance = median / target_ms - 1
        echo(f"landing round {r + 1}: table {record['table_ms']:.4g} ms (target in table units {table_target:.4g}), "
             f"{len(steps)} changes, measured {median:.4g} ms ({100 * distance:+.2f}%)"
             f"{' flagged ' + ','.join(m.flags) if not usable(m.flags) else ''}")
        if not usable(m.flags) or abs(distance) <= tolerance:
            break
        table_target = target_ms * record["table_ms"] / median
    kept = choose_round(records, target_ms)
    if kept is None:
        return landed, records
    records[kept]["kept"] = True
    return children[kept], records


def choose_round(records: list[dict[str, Any]], target_ms: float) -> int | None:
    """The landing round to keep: of the measured rounds not flagged `disturbed` (drift or load
    was seen), the one whose 95% interval's far end lies nearest the target. A `noisy` round (a
    wide interval) competes on the worst it could be: it may not calibrate, but a usable reading
    far off the target does not beat a noisy one near it by its flag alone. None: no such round."""
    def worst(r: dict[str, Any]) -> float:
        return max(abs(ms / target_ms - 1) for ms in r["measured_ci95_ms"])

    candidates = [i for i, r in enumerate(records) if "measured_ms" in r and "disturbed" not in r["measured_flags"]]
    return min(candidates, key=lambda i: worst(records[i])) if candidates else None


def finish(run: RunDir, space: DartsSpace, arch, table, measurer, measure_batch: int, final_sessions: int, epochs: int,
           head: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Measure the final architecture once over max(final_sessions, k) fresh processes, write it and
    the summary. `head(description)` gives the method's own leading fields, target_ms among them."""

    sessions, final = [], None
    if measurer is not None:
        wide = measurer.with_processes(max(final_sessions, measurer.protocol.processes))
        final = measure_arch(wide, space, arch, measure_batch, force=True).measurement
        sessions = [p["latency_ms"] for p in final.processes] or [final.stats["median_ms"]]
    measured = final.stats["median_ms"] if final is not None else None
    d = describe(space, arch, table)
    predicted = d.get("table_ms")
    summary = head(d)
    target_ms = summary.get("target_ms")
    summary.update({
        "predicted_ms": predicted,
        "measured_ms": measured,
        "measured_sessions_ms": sessions,
        "measured_ci95_ms": final.ci95_ms if final is not None else None,
        "measured_flags": final.flags if final is not None else None,
        "lookup_error_pct": None if measured is None or predicted is None else 100.0 * (predicted - measured) / measured,
        "measured_distance_to_target_pct": (None if measured is None or target_ms is None
                                            else 100.0 * (measured - target_ms) / target_ms),
        "epochs": epochs,
        "space": space.config,
        "arch_hash": arch.hash,
        "genotype": d["genotype"],
        "params_m": d["params_m"],
        "macs_m": d["macs_m"],
        "mac_m": d["mac_m"],
        "active_nodes": d["active_nodes"],
        "latency_model": table.name if table is not None else None,
    })
    run.write_final_arch(arch.to_json())
    run.write_summary(summary)
    return summary
