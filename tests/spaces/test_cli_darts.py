"""The darts space through the CLI: info and its JSON, random architectures, and one line + exit 2
for each kind of bad input."""

from __future__ import annotations

import json

import pytest

from hwnas.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_reports_the_references_at_evaluation_size(capsys):
    code, out, _ = run(capsys, "info", "--space", "darts", "--channels", "36", "--cells", "20", "--json")
    assert code == 0
    doc = json.loads(out)
    counts = {a["name"]: a["params"] for a in doc["architectures"]}
    assert counts["darts-v2"] == 3_349_342 and doc["space"]["reductions"] == [6, 13]


def test_arch_random_round_trips_through_measure_validation(capsys, tmp_path):
    code, out, _ = run(capsys, "arch", "--space", "darts", "--random", "--seed", "2")
    assert code == 0
    path = tmp_path / "a.json"
    path.write_text(out)
    code, out, _ = run(capsys, "info", "--space", "darts", "--arch", str(path))
    assert code == 0 and "M parameters" in out


@pytest.mark.parametrize("args, message", [
    (["info", "--space", "darts", "--cells", "1"], "impossible with 1 cells"),
    (["info", "--space", "dart"], "did you mean 'darts'"),
    (["info", "--channels", "8"], "--channels is an option of the darts space"),
    (["lut", "build", "--space", "darts"], "space darts works with"),
    (["search", "--method", "snas", "--target", "1", "--out", "OUT", "--resource", "latncy"], "'latncy' is not one of 'params'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    args = [str(tmp_path / "run") if a == "OUT" else a for a in args]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith("hwnas: error: ") and message in err and err.count("\n") == 1


def test_bad_genotype_file_is_one_line(capsys, tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 7]] + [["skip_connect", 0]] * 6,
                                "reduce": [["max_pool_3x3", 0]] * 8}))
    code, _, err = run(capsys, "info", "--space", "darts", "--arch", str(path))
    assert code == 2 and "out of range" in err and err.count("\n") == 1


def test_additivity_measures_each_cell_against_its_parts(capsys, tmp_path):
    out = tmp_path / "cells.csv"
    code, text, err = run(capsys, "additivity", "--space", "darts", "--channels", "2", "--cells", "3", "--resolution", "16",
                          "--classes", "10", "--n", "2", "--warmup", "1", "--min-runs", "20", "--min-time", "0",
                          "--processes", "1", "--no-reference", "--db", str(tmp_path / "m.sqlite"), "--out", str(out))
    assert code == 0, err
    import pandas as pd

    cells = pd.read_csv(out)
    assert len(cells) == 6 and set(cells["kind"]) == {"normal", "reduce"} and (cells["measured_ms"] > 0).all()
    assert "non-additive share" in text and ("cells usable" in text or "FIGURES ON FLAGGED MEASUREMENTS" in text)
