"""`hwnas demo`: the whole job end to end on the embedded default (scikit-learn's digits, the
tfnas space, ort-cpu): a lookup table, a TF-NAS search on it and a UNAS search on the true
measured latency at the same target, side by side, and a report of both."""

from __future__ import annotations

from pathlib import Path

import click
from platformdirs import user_data_path

from hwnas.cli.options import STORE, check_out, make_measurer
from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import Space
from hwnas.validate import POSITIVE_MS, SEED, Float, Int


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where the lookup table and both run directories go (a rerun resumes and reuses them). "
                   "Default: demo/ in the user data directory, never the current folder.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Where the report goes. Default: report/ beside the runs.")
@click.option("--db", type=STORE, default=None,
              help="Measurement store: an SQLite file or a postgresql:// URL (default: $HWNAS_DB or the user cache).")
@click.option("--backend", "backend_name", default="ort-cpu", show_default=True,
              help="Where the table and UNAS's true latency are measured.")
@click.option("--resolution", type=Int(16, 2048), default=224, show_default=True, help="Deployment resolution.")
@click.option("--width-mult", type=Float(0.1, 4), default=0.5, show_default=True, help="Width multiplier of the space.")
@click.option("--width-step", type=Int(1, 4096), default=32, show_default=True, help="Lookup-table width grid.")
@click.option("--epochs", type=Int(1, 10_000), default=12, show_default=True, help="Epochs of each search.")
@click.option("--warmup-epochs", type=Int(0, 10_000), default=4, show_default=True,
              help="Epochs that train only the supernet's weights before the architecture moves.")
@click.option("--target", type=POSITIVE_MS, default=None,
              help="Target latency in ms (default: 0.8 x the expected latency of the untrained supernet, so the "
                   "latency constraint binds from the first architecture step, as in the papers).")
@click.option("--limit", type=Int(2, 100_000_000), default=None, help="Use at most this many training images.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the data split, weights and sampling.")
def demo(out, report_dir, db, backend_name, resolution, width_mult, width_step, epochs, warmup_epochs, target, limit, seed):
    """Lookup table, TF-NAS and UNAS searches side by side on digits, and their report."""
    from hwnas.data import load_dataset
    from hwnas.search import tfnas, unas
    from hwnas.surrogates.base import uniform_latency
    from hwnas.surrogates.evaluate import evaluate_stored
    from hwnas.surrogates.lut import LookupTable

    # Everything checked before the table build and searches (minutes): no late refusal.
    if out is None:
        out = user_data_path("hwnas") / "demo"
    report_dir = report_dir if report_dir is not None else out / "report"
    check_out(out, directory=True)
    check_out(report_dir, directory=True, option="--report")
    if warmup_epochs >= epochs:
        raise HwnasError(f"--warmup-epochs must be below --epochs ({epochs}), got {warmup_epochs}")
    data = load_dataset("digits", seed=seed, limit=limit)
    deploy = Space("tfnas", resolution, width_mult, data.num_classes)
    measurer = make_measurer(backend_name, 1, 1, "fp32", 5, 20, 0.3, db)
    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    try:
        lut_path = out / "lut.json"
        if lut_path.exists():
            lut = LookupTable.load(lut_path, expect_space=deploy, expect_backend=backend_name, expect_batch=1)
        else:
            echo(f"1/5 lookup table of {deploy} on {backend_name}")
            lut = LookupTable.build(deploy, measurer, batch=1, width_step=width_step)
            out.mkdir(parents=True, exist_ok=True)
            lut.save(lut_path)
        if target is None:
            target = round(0.8 * uniform_latency(lut), 3)
        echo(f"2/5 TF-NAS search on the lookup table, target {target:.4g} ms")
        info = {"latency_model_file": str(lut_path.resolve()), "width_step": width_step}
        t_cfg = tfnas.TFNASConfig(target_ms=target, epochs=epochs, warmup_epochs=warmup_epochs, seed=seed, measure_every=2)
        summaries = {"TF-NAS on the table": tfnas.search(t_cfg, data, lut, out / "tfnas", measurer=measurer, run_info=info, echo=echo)}
        echo(f"3/5 UNAS search on the true latency measured on {backend_name}, target {target:.4g} ms")
        u_cfg = unas.UNASConfig(target_ms=target, epochs=epochs, warmup_epochs=warmup_epochs, seed=seed, measure_every=2)
        summaries["UNAS on the true latency"] = unas.search(u_cfg, data, lut, out / "unas", measurer=measurer, lut=lut,
                                                            run_info=info, echo=echo)
        # The report fits nothing: the latency models are scored here, on the usable subnets the
        # searches measured (flagged ones left out), as `hwnas surrogate eval` would.
        echo("4/5 latency models against the table on the subnets the searches measured")
        metrics, note = evaluate_stored(measurer, deploy, lut, batch=1, seed=seed)
        echo(f"  {note}")
        surrogates_csv = None
        if metrics is not None:
            surrogates_csv = out / "surrogates.csv"
            metrics.to_csv(surrogates_csv, index=False)
    finally:
        measurer.close()
    echo(f"5/5 report in {report_dir}")
    from hwnas.report.document import build, write
    from hwnas.store import default_db_path

    rep = build([out / "tfnas", out / "unas"], store=db or default_db_path(), lut=lut_path, surrogates=surrogates_csv,
                title="hwnas demo", warn=lambda msg: echo(f"hwnas: warning: {msg}"))
    report_file = write(rep, report_dir)
    click.echo(summary_lines(summaries, out, Path(report_file)))


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def summary_lines(summaries: dict, out: Path, report_file: Path) -> str:
    """What each search reached: target, latency under its model, measured latency, lookup error."""
    lines = ["", "search                     target ms  model ms  measured ms (vs target)  lookup error"]
    for name, s in summaries.items():
        measured = s.get("measured_ms")
        vs = None if measured is None else 100 * (measured / s["target_ms"] - 1)
        lines.append(f"{name:<26} {s['target_ms']:>9.4g} {s['predicted_ms']:>9.4g} "
                     f"{'n/a' if measured is None else f'{measured:.4g}':>12} ({_pct(vs)})  {_pct(s.get('lookup_error_pct')):>12}")
    lines += ["", f"runs:   {out.resolve()}", f"report: {report_file.resolve()}"]
    return "\n".join(lines)


commands = [demo]
