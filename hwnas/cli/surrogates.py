"""CLI: `hwnas lut build`, `hwnas sample`, `hwnas surrogate fit|eval`, `hwnas additivity`."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import click
import numpy as np

from hwnas.cli.options import (
    OUTPUT_FORMATS,
    STORE,
    backend_options,
    check_out,
    fail,
    given_on_command_line,
    is_new_space,
    make_measurer,
    make_space,
    network_rows,
    space_options,
    write_table,
)
from hwnas.backends.protocol import usable
from hwnas.errors import ForeignTargetError
from hwnas.surrogates import DEFAULT_MODELS
from hwnas.surrogates.data import measured_subnets, read_csv, split
from hwnas.surrogates.data import sample as sample_subnets
from hwnas.validate import COUNT, SEED, Float, Int

DEFAULT_EVAL_MODELS = ",".join(DEFAULT_MODELS)


def width_step_option(f):
    return click.option("--width-step", type=Int(1, 4096), default=32, show_default=True,
                        help="Mid-channel grid of the lookup table (elastic spaces); interpolated between.")(f)


def _hint(space, backend_name, batch, threads, warmup, min_runs, min_time, n=100) -> str:
    """The `hwnas sample` command that measures subnets these options will find."""
    parts = [f"hwnas sample --space {space.name} --resolution {space.resolution}"]
    if is_new_space(space.name):
        parts.append(f"--channels {space.channels} --cells {space.cells} --classes {space.num_classes}")
    else:
        if space.width_mult != 1.0:
            parts.append(f"--width-mult {space.width_mult:g}")
        if space.num_classes != 1000:
            parts.append(f"--classes {space.num_classes}")
    parts.append(f"--backend {backend_name}")
    for flag, value, default in (("--batch", batch, 1), ("--threads", threads, 1), ("--warmup", warmup, 5),
                                 ("--min-runs", min_runs, 20), ("--min-time", min_time, 0.3)):
        if value != default:
            parts.append(f"{flag} {value:g}")
    return " ".join(parts) + f" --n {n}"


def _table(space, measurer, batch, lut_path, width_step, transfer=False):
    """The table at --lut (of this target, or with --transfer of any target), else one built here."""
    from hwnas.surrogates.lut import LookupTable

    if transfer and lut_path is None:
        fail("--transfer needs --lut: the table measured on the other target")
    if lut_path is not None:
        if transfer:
            return LookupTable.load(lut_path, expect_space=space, expect_batch=batch)
        try:
            return LookupTable.load(lut_path, expect_space=space, expect_batch=batch, expect_backend=measurer.backend.name,
                                    expect_fingerprint=measurer.backend.fingerprint(batch))
        except ForeignTargetError as e:
            fail(f"{e}; to map it to this target, add --transfer and fit --model transfer on a few subnets measured here")
    return LookupTable.build(space, measurer, batch, width_step)


def _subnets(space, measurer, batch, csv_path):
    if csv_path is not None:
        return read_csv(csv_path, space)
    return measured_subnets(measurer, space, batch)


def _target(measurer, batch, csv_path) -> dict:
    from hwnas.surrogates.evaluate import measured_target

    if csv_path is not None:  # the CSV's target is whatever the user measured on
        return {"batch": batch, "backend": measurer.backend.name, "fingerprint": None, "protocol": None}
    return measured_target(measurer, batch)


# --- lut build ------------------------------------------------------------------------------


@click.group()
def lut():
    """Latency lookup tables."""


@lut.command("build")
@space_options
@backend_options
@width_step_option
@click.option("--out", type=click.Path(path_type=Path), default=Path("lut.json"), show_default=True,
              help="The table (JSON).")
def lut_build(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
              min_runs, min_time, db, width_step, out):
    """Measure every distinct layer of the space (through the store: a rebuild or an interrupted
    build re-measures nothing) and write the lookup table."""

    from hwnas.surrogates.lut import LookupTable

    check_out(out, (".json",))
    space = make_space(space_name, resolution, width_mult, num_classes)
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    t0 = time.perf_counter()
    before = len(measurer.store)
    table = LookupTable.build(space, measurer, batch, width_step)
    measured = len(measurer.store) - before
    measurer.close()
    table.save(out)
    points = sum(len(m) for m, _ in table.entries.values())
    click.echo(f"lookup table for {space}: {len(table.entries)} entries over {points} layer specs "
               f"({measured} newly measured), base (stem + fixed + head) {table.base_ms:.4g} ms, "
               f"one model's overhead {table.overhead_ms * 1e3:.3g} us (counted once per network), {time.perf_counter() - t0:.0f} s")
    click.echo(f"wrote {out}", err=True)


# --- sample ---------------------------------------------------------------------------------


@click.command()
@space_options
@backend_options
@click.option("--n", "n", type=COUNT, required=True, help="Number of random subnets.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Sampling seed (the same seed, the same subnets).")
@click.option("--width-align", type=Int(1, 64), default=1, show_default=True,
              help="Round every width to a multiple of this (what `hwnas search --width-align` produces).")
@click.option("--scale-to", metavar="LO:HI",
              help="Elasticity-scale each subnet under --lut to a latency drawn uniformly in LO..HI ms: subnets like "
                   "those a search ends with, to fit a correction of the table where the search uses it.")
@click.option("--lut", "lut_path", type=click.Path(path_type=Path), help="Lookup table for --scale-to.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the table (.csv, .parquet or .json).")
def sample(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup, min_runs,
           min_time, db, n, seed, width_align, scale_to, lut_path, out):
    """Measure N random subnets end to end into the store: the ground truth surrogates fit on."""
    import pandas as pd


    check_out(out, OUTPUT_FORMATS)
    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True)
    if is_new_space(space.name):  # whole random networks of the space (darts: SNAS-style child graphs)
        _refuse_mbconv_options(space, scale_to=scale_to, lut=lut_path, width_align=width_align != 1)
        measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
        try:
            rows = network_rows(space, measurer, space.random_archs(n, seed), batch)
        finally:
            measurer.close()
        write_table(pd.DataFrame(rows), out)
        return
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    scaling = None
    if scale_to is not None:
        if lut_path is None:
            fail("--scale-to needs --lut: the lookup table the subnets are scaled under")
        try:
            lo, hi = (float(v) for v in scale_to.split(":"))
        except ValueError:
            fail(f"--scale-to takes LO:HI in ms, e.g. 1.8:3.2, got {scale_to!r}")
        scaling = (_table(space, measurer, batch, lut_path, None), lo, hi)
    elif lut_path is not None:
        fail("--lut is used only with --scale-to")
    rows = sample_subnets(space, measurer, n, seed, batch, align=width_align, scale_to=scaling)
    measurer.close()
    write_table(pd.DataFrame(rows), out)


# --- surrogate fit / eval -------------------------------------------------------------------


@click.group()
def surrogate():
    """Latency models fitted on measured subnets."""


def data_options(f):
    f = click.option("--csv", "csv_path", type=click.Path(path_type=Path),
                     help="Fit on a CSV of (arch JSON, latency_ms) pairs instead of the store's subnets.")(f)
    f = click.option("--seed", type=SEED, default=0, show_default=True, help="Split and model seed.")(f)
    f = click.option("--train", "n_train", type=COUNT, default=None, help="Training subnets (default: all available).")(f)
    f = click.option("--lut", "lut_path", type=click.Path(path_type=Path),
                     help="Lookup table file (default: build it through the store).")(f)
    f = click.option("--transfer", is_flag=True,
                     help="--lut was measured on another target (same space and batch): take it as it is, to map it "
                          "to this one with --model transfer (or lut+linear) fitted on a few subnets measured here.")(f)
    return width_step_option(f)


@surrogate.command("fit")
@space_options
@backend_options
@data_options
@click.option("--model", "model_name", required=True, help="lut, linear, lut+linear, mlp, gbt or transfer.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The fitted model (JSON).")
def surrogate_fit(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
                  min_runs, min_time, db, width_step, transfer, lut_path, n_train, seed, csv_path, model_name, out):
    """Fit a latency model on measured subnets and save it."""

    from hwnas.surrogates.metrics import latency_metrics
    from hwnas.surrogates.models import MODELS, check_fit, fit_model, parse_models, predict_all, save_model

    check_out(out, (".json",))
    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True)
    if is_new_space(space.name):
        _refuse_mbconv_options(space, csv=csv_path, transfer=transfer)
        _on_cells(lambda measurer, hint: _cell_fit(space, measurer, batch, lut_path, n_train, seed, model_name, out, hint),
                  space, backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
        return
    names = parse_models(model_name)
    if len(names) != 1:
        fail(f"surrogate fit takes one --model, got {', '.join(names)}")
    name = names[0]
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    hint = _hint(space, backend_name, batch, threads, warmup, min_runs, min_time)
    if transfer and not MODELS.get(name).needs_lut:
        fail(f"--transfer maps a table to this target; --model {name} reads no table")
    table = _table(space, measurer, batch, lut_path, width_step, transfer) if MODELS.get(name).needs_lut and \
        (lut_path or transfer) else None
    data = _subnets(space, measurer, batch, csv_path)
    if n_train is not None:
        if n_train < 1 or n_train > len(data):
            fail(f"--train {n_train}: {len(data)} measured subnets are available; measure more with `{hint}`")
        data = data.take(np.random.default_rng(seed).permutation(len(data))[:n_train])
    check_fit(name, len(data), True, hint)  # before a long table build (the table is built below)
    if MODELS.get(name).needs_lut and table is None:
        table = _table(space, measurer, batch, None, width_step)
    model = fit_model(name, space, data, table, _target(measurer, batch, csv_path), seed, hint)
    measurer.close()
    save_model(model, out)
    fit = latency_metrics(data.latency_ms, predict_all(model, data.archs)) if len(data) >= 2 else None
    summary = f", training MAPE {fit['mape_pct']:.3g} %" if fit else ""
    click.echo(f"{name} model fitted on {len(data)} subnets{summary}")
    click.echo(f"wrote {out}", err=True)


@surrogate.command("eval")
@space_options
@backend_options
@data_options
@click.option("--model", "model_names", default=DEFAULT_EVAL_MODELS, show_default=True,
              help="Comma-separated models: lut, linear, lut+linear, mlp, gbt, transfer.")
@click.option("--test", "n_test", type=Int(5, 1_000_000), default=None, help="Held-out subnets (default: a fifth, at least 5).")
@click.option("--no-curve", is_flag=True, help="Skip the learning curve (25, 50, 100, 200, 400 training subnets).")
@click.option("--repeat-db", type=STORE, default=None,
              help="A second store: the held-out subnets are measured again into it (resumable) and their agreement "
                   "with the first measurement is the floor below which no model is called better than the table.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the metrics (.csv, .parquet or .json).")
def surrogate_eval(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
                   min_runs, min_time, db, width_step, transfer, lut_path, n_train, seed, csv_path, model_names, n_test, no_curve,
                   repeat_db, out):
    """Fit each model on training subnets and score it on a disjoint held-out set: RMSE, MAPE,
    share within 2/5/10 %, Kendall tau, Spearman rho, max error, bias, and a learning curve; each
    again after removing one machine-wide scale (`*_scaled`). A model whose learning curve rises is
    refused; with --repeat-db, one is called better than the table only by more than the floor."""
    from hwnas.surrogates.evaluate import evaluate
    from hwnas.surrogates.models import MODELS, check_fit, parse_models

    check_out(out, OUTPUT_FORMATS)
    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True)
    if is_new_space(space.name):
        _refuse_mbconv_options(space, csv=csv_path, transfer=transfer, repeat_db=repeat_db,
                               model=given_on_command_line("model_names"))
        _on_cells(lambda measurer, hint: _cell_eval(space, measurer, batch, lut_path, n_train, n_test, seed, out, hint),
                  space, backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
        return
    names = parse_models(model_names)
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    wants_table = any(MODELS.get(n).needs_lut for n in names)
    if transfer and not wants_table:
        fail(f"--transfer maps a table to this target; none of --model {','.join(names)} reads a table")
    table = _table(space, measurer, batch, lut_path, width_step, transfer) if wants_table and (lut_path or transfer) \
        else None  # cheap: first
    data = _subnets(space, measurer, batch, csv_path)
    if n_test is None:
        n_test = max(5, len(data) // 5)
    if n_test < 5:
        fail(f"--test must be at least 5, got {n_test}")
    need = n_test + max(MODELS.get(n).min_train for n in names)
    source = f"CSV {csv_path}" if csv_path else f"the store for {space} on {backend_name}"
    hint = "hwnas sample ... or a longer CSV" if csv_path else _hint(space, backend_name, batch, threads, warmup,
                                                                      min_runs, min_time, max(100, need))
    if len(data) < need:
        fail(f"{source} holds {len(data)} measured subnets; {', '.join(names)} with {n_test} held out need at least "
             f"{need}: measure more with `{hint}`")
    train, test = split(data, n_test, seed)
    if n_train is not None:
        if not 1 <= n_train <= len(train):
            fail(f"--train {n_train}: {len(train)} subnets remain after {n_test} held out; measure more with `{hint}`")
        train = train.take(range(n_train))
    for name in names:
        check_fit(name, len(train), True, hint)  # before a long table build (the table is built below)
    if repeat_db is not None and _same_store(repeat_db, measurer.store):
        fail("--repeat-db must be another store than --db: a second pass into the same store reads the first back")
    if wants_table and table is None:
        table = _table(space, measurer, batch, None, width_step)
    again = _measure_again(space, test, batch, repeat_db, backend_name, threads, precision, warmup, min_runs, min_time)
    df = evaluate(names, train, test, table, space, _target(measurer, batch, csv_path), seed, not no_curve, hint, again)
    measurer.close()
    write_table(df, out)


# --- the darts space: the cell table and its parts correction ---------------------------------

# Latency models of the cell spaces: the cell table (overhead removed per part, as built, or as
# the --lut file holds it) and the table with the parts correction (measured ~ a + b * table
# + c * parts) fitted on measured networks (`CellLatencyTable.fit_correction`).
CELL_MODELS = ("cell-lut", "cell-lut+parts")
MIN_PARTS_FIT = 4  # three coefficients, and one network more


def _refuse_mbconv_options(space, **given) -> None:
    named = [k.replace("_", "-") for k, v in given.items() if v]
    if named:
        fail(f"--{named[0]} is for the MBConv spaces; the {space.name} space's models are {', '.join(CELL_MODELS)}, "
             "fitted on networks measured into the store (hwnas sample)")


def _on_cells(run, space, backend_name, batch, threads, precision, warmup, min_runs, min_time, db) -> None:
    """`run(measurer, hint)` with this command's measurer, closed however it ends; `hint` the
    `hwnas sample` command that measures the networks it reads."""
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    try:
        run(measurer, _hint(space, backend_name, batch, threads, warmup, min_runs, min_time))
    finally:
        measurer.close()


def _cell_table(space, measurer, batch: int, lut_path):
    from hwnas.latency.cells import CellLatencyTable

    if lut_path is not None:
        return CellLatencyTable.load(lut_path, expect_space=space)
    return CellLatencyTable.build(space, measurer, batch)


def _enough(space, have: int, need: int, hint: str) -> None:
    if have < need:
        fail(f"the store holds {have} usable measured networks of {space} for this target and protocol; "
             f"at least {need} are needed: measure more with `{hint}`")


def _cell_fit(space, measurer, batch: int, lut_path, n_train, seed: int, name: str, out: Path, hint: str) -> None:
    """`surrogate fit` on a cell space: the table, corrected on the stored networks for
    cell-lut+parts, saved where `hwnas search --latency-model` reads it."""
    from hwnas.surrogates.metrics import latency_metrics

    if name not in CELL_MODELS:
        fail(f"unknown model {name!r} for the {space.name} space; known: {', '.join(CELL_MODELS)}")
    data = measured_subnets(measurer, space, batch)
    _enough(space, len(data), MIN_PARTS_FIT if name == "cell-lut+parts" else 0, hint)
    if n_train is not None:
        if not MIN_PARTS_FIT <= n_train <= len(data):
            fail(f"--train {n_train}: {len(data)} usable measured networks are available (at least {MIN_PARTS_FIT} needed)")
        data = data.take(np.random.default_rng(seed).permutation(len(data))[:n_train])
    table = _cell_table(space, measurer, batch, lut_path)
    if name == "cell-lut+parts":
        table.fit_correction(data.archs, data.latency_ms)
    table.save(out)
    if len(data) >= 2:
        fit = latency_metrics(data.latency_ms, [table.predict(a) for a in data.archs])
        click.echo(f"{name} on {len(data)} measured networks: MAPE {fit['mape_pct']:.3g} %, "
                   f"Kendall tau {fit['kendall_tau']:.3f}" + (" (its training networks)" if name == "cell-lut+parts" else ""))
    click.echo(f"wrote {out}", err=True)


def _cell_eval(space, measurer, batch: int, lut_path, n_train, n_test, seed: int, out, hint: str) -> None:
    """`surrogate eval` on a cell space: both models scored on held-out stored networks, the
    correction fitted on the rest."""
    import pandas as pd

    from hwnas.surrogates.metrics import latency_metrics

    data = measured_subnets(measurer, space, batch)
    n_test = max(5, len(data) // 5) if n_test is None else n_test
    _enough(space, len(data), n_test + MIN_PARTS_FIT, hint)
    train, test = split(data, n_test, seed)
    if n_train is not None:
        if not MIN_PARTS_FIT <= n_train <= len(train):
            fail(f"--train {n_train}: {len(train)} networks remain after {n_test} held out (at least {MIN_PARTS_FIT} needed)")
        train = train.take(range(n_train))
    table = _cell_table(space, measurer, batch, lut_path)
    rows = [{"model": "cell-lut", "n_train": 0, "n_test": len(test),
             **latency_metrics(test.latency_ms, [table.predict(a) for a in test.archs])}]
    table.fit_correction(train.archs, train.latency_ms)
    rows.append({"model": "cell-lut+parts", "n_train": len(train), "n_test": len(test),
                 **latency_metrics(test.latency_ms, [table.predict(a) for a in test.archs])})
    write_table(pd.DataFrame(rows), out)


def _same_store(where, b) -> bool:
    from hwnas.store import Store

    a = Store(where)
    if a.sqlite and b.sqlite:
        return Path(a.path).resolve() == Path(b.path).resolve()
    return a.url == b.url


def _measure_again(space, test, batch, repeat_db, backend_name, threads, precision, warmup, min_runs, min_time):
    """The held-out subnets measured again in their own store (NaN where that measurement is
    flagged: a flagged repeat is no floor), or None without --repeat-db."""
    if repeat_db is None:
        return None
    with make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, repeat_db) as again:
        done = again.many([again.arch_item(space, a, batch) for a in test.archs], "held-out subnets again")
    return np.array([m.measurement.stats["median_ms"] if usable(m.measurement.flags) else np.nan for m in done])


# --- additivity -----------------------------------------------------------------------------


@click.command()
@space_options
@backend_options
@click.option("--n", "n_pairs", type=COUNT, default=None,
              help="Adjacent layer pairs to measure (default 20); darts: random architectures, every cell of each (default 3).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the subnets the pairs come from.")
@click.option("--alpha", type=Float(0, 1e6, lo_open=True), default=0.5, show_default=True,
              help="Flag fusion where T1 + T2 - T12 > alpha * min(T1, T2).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("additivity.csv"), show_default=True,
              help="Per-pair (darts: per-cell) table (.csv, .parquet or .json).")
def additivity(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
               min_runs, min_time, db, n_pairs, seed, alpha, out):
    """Measure adjacent layer pairs as one model against the sum of their parts; in the darts
    space, each cell as one model against the cell table's sum of its parts."""
    from hwnas.surrogates.additivity import additivity as run
    from hwnas.surrogates.additivity import summarize

    check_out(out, OUTPUT_FORMATS)
    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True)
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    if is_new_space(space.name):  # darts: cells, not layer pairs
        try:
            return _cell_additivity(space, measurer, batch, 3 if n_pairs is None else n_pairs, seed, out)
        finally:
            measurer.close()
    pairs = run(space, measurer, 20 if n_pairs is None else n_pairs, seed, batch, alpha)
    measurer.close()
    write_table(summarize(pairs), None)
    click.echo(f"{int(pairs['fused'].sum())} of {len(pairs)} pairs fused (alpha {alpha:g}); non-additive share "
               f"mean {pairs['nonadditive_share'].mean():.3g}, max {pairs['nonadditive_share'].max():.3g}")
    _write_quiet(pairs, out)


def _cell_additivity(space, measurer, batch: int, n_archs: int, seed: int, out: Path) -> None:
    """Every cell of n random child graphs against the cell table's parts; flagged measurements
    are kept in the per-cell file and left out of the summary, which counts them (where every one
    is flagged, the summary is of them all, and says so)."""
    import pandas as pd

    from hwnas.latency.cells import CellLatencyTable, cell_additivity

    table = CellLatencyTable.build(space, measurer, batch=batch)
    cells = pd.DataFrame(cell_additivity(table, measurer, n_archs, seed))
    _write_quiet(cells, out)  # every cell, its flags beside it, whatever the summary can use
    ok = cells[cells["flags"].map(lambda f: usable(f.split(",") if f else []))]
    label = f"{len(ok)} of {len(cells)} cells usable ({len(cells) - len(ok)} flagged, left out)"
    if ok.empty:  # the rule: figures on flagged measurements only beside usable ones, or labelled as such
        ok, label = cells, f"all {len(cells)} cells flagged (noisy or disturbed): FIGURES ON FLAGGED MEASUREMENTS"
    summary = (ok.groupby("kind").agg(cells=("cell", "size"), parts=("parts", "mean"), table_ms=("table_ms", "mean"),
                                      measured_ms=("measured_ms", "mean"), mean_share=("nonadditive_share", "mean"),
                                      max_abs_share=("nonadditive_share", lambda x: x.abs().max()))
               .reset_index())
    write_table(summary, None)
    click.echo(f"{label}; cell measured as one model vs its parts less (parts - 1) x {table.overhead_ms():.4g} ms "
               f"overhead: non-additive share mean {ok['nonadditive_share'].mean():.3g}, "
               f"worst {ok['nonadditive_share'].abs().max():.3g}")


def _write_quiet(df, out: Path) -> None:
    """The per-pair table goes to the file only; the summary above is what is printed."""

    with contextlib.redirect_stdout(io.StringIO()):
        write_table(df, out)


commands = [lut, sample, surrogate, additivity]
