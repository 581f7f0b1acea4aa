"""`hwnas report`: an offline HTML report and a Markdown summary of runs, measurements and results."""

from __future__ import annotations

from pathlib import Path

import click

from hwnas.cli.options import STORE, check_out


@click.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--store", "--db", "store", type=STORE, default=None,
              help="Measurement store: an SQLite file or a postgresql:// URL. Default: $HWNAS_DB or the user cache "
                   "directory, where it exists.")
@click.option("--lut", type=click.Path(path_type=Path), default=None,
              help="Lookup table (default: each run's latency_model_file or RUN/lut.json).")
@click.option("--trained", type=click.Path(path_type=Path), multiple=True,
              help="`hwnas train --out` result JSON; repeat. A final architecture's result gives its accuracy, "
                   "others are plotted as random architectures.")
@click.option("--surrogates", type=click.Path(path_type=Path), default=None,
              help="Metrics CSV from `hwnas surrogate eval --out` (the report itself fits no model).")
@click.option("--quality", type=click.Path(path_type=Path), default=None,
              help="search_quality.csv from benchmarks/search_quality.py: every method side by side.")
@click.option("--title", default=None, help="Title of the report.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: reports/<timestamp>).")
def report(run_dirs, store, lut, trained, surrogates, quality, title, out):
    """Write report.html (self-contained), summary.md and one CSV per figure and table for
    search runs RUN_DIR..., the measurement store, a lookup table and trained results."""
    from hwnas.report.document import build, default_out, write

    check_out(out, directory=True)
    rep = build(list(run_dirs), store=store, lut=lut, trained=list(trained), surrogates=surrogates, title=title, quality=quality,
                warn=lambda msg: click.echo(f"hwnas: warning: {msg}", err=True))
    out = out if out is not None else default_out()
    path = write(rep, out)
    n_fig = sum(type(i).__name__ == "Plot" for s in rep.sections for i in s.items)
    n_tab = sum(type(i).__name__ == "Table" for s in rep.sections for i in s.items)
    click.echo(f"wrote {path} and {out / 'summary.md'} ({n_fig} figures, {n_tab} tables, CSVs beside them)")


commands = [report]
