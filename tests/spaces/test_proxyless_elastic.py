"""The third MBConv space, added as one file (`hwnas/spaces/proxyless_elastic.py`) and one
registry line, runs the whole job through the command line as a user types it: measured subnets,
a lookup table, a surrogate fitted on the subnets, TF-NAS on the table, UNAS on the true latency,
and the report of both."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hwnas.cli import main as cli_main
from hwnas.spaces import space_names
from hwnas.spaces.mbconv import Space
from hwnas.surrogates.base import uniform_latency
from hwnas.surrogates.lut import LookupTable

SPACE = ["--space", "proxyless-elastic", "--resolution", "32", "--width-mult", "0.25"]  # a search's classes: its data's
# Fast timing, one process, no reference: nothing here is a latency figure.
TIMING = ["--warmup", "1", "--min-runs", "5", "--min-time", "0", "--processes", "1", "--no-reference"]
SEARCH = ["--train-resolution", "16", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32", "--limit", "64",
          "--measure-every", "0", "--final-sessions", "1"]


def hwnas(capsys, *args) -> str:
    code = cli_main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_a_space_in_one_file_runs_the_whole_job(tmp_path, capsys):
    assert "proxyless-elastic" in space_names()
    db, lut = tmp_path / "store.sqlite", tmp_path / "lut.json"
    common = [*SPACE, "--classes", "10", *TIMING, "--db", db]
    hwnas(capsys, "measure", *common, "--random", "--n", "12", "--out", tmp_path / "measured.csv")
    assert len(pd.read_csv(tmp_path / "measured.csv")) == 12
    hwnas(capsys, "lut", "build", *common, "--width-step", "128", "--out", lut)
    table = LookupTable.load(lut)
    space = Space("proxyless-elastic", 32, 0.25, 10)
    assert table.space.config == space.config and table.predict(space.default_arch()) > 0
    # the 12 measured subnets train it (the store holds them for this target)
    out = hwnas(capsys, "surrogate", "fit", *common, "--model", "lut+linear", "--lut", lut,
                "--out", tmp_path / "model.json")
    assert "lut+linear model fitted on 12 subnets" in out

    target = round(0.9 * uniform_latency(table), 4)
    searches = {"tfnas": ["--method", "tfnas"], "unas": ["--method", "unas", "--true-latency", "--no-calibrate-widths"]}
    for name, method in searches.items():
        hwnas(capsys, "search", *method, *SPACE, *TIMING, *SEARCH, "--lut", lut, "--target", target, "--db", db,
              "--out", tmp_path / name)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        final = space.validate(json.loads((tmp_path / name / "final_arch.json").read_text()))
        assert summary["arch_hash"] == final.hash and summary["measured_ms"] > 0

    hwnas(capsys, "report", tmp_path / "tfnas", tmp_path / "unas", "--lut", lut, "--db", db, "--out", tmp_path / "report")
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert list(runs["status"]) == ["complete", "complete"]
    assert (tmp_path / "report" / "lookup_scatter.csv").exists()
