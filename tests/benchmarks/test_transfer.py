"""benchmarks/transfer.py: the session's tiny ort-cpu table carried to torch-cpu, measured for real."""

from __future__ import annotations

import re

import pytest


def test_a_table_carried_to_another_backend(lab, tmp_path, capsys, benchmark_module):
    lut = tmp_path / "lut.json"
    lab.lut.save(lut)
    bench = benchmark_module("transfer")
    argv = ["--lut", str(lut), "--backend", "torch-cpu", "--n", "16", "--k", "5", "--splits", "3", "--processes", "1",
            "--min-time", "0", "--db", str(tmp_path / "m.sqlite")]
    bench.main(argv)  # torch-cpu times in this process: single-process readings, never flagged noisy
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "torch-cpu: 16 of 16 subnets usable (the rest flagged); table from ort-cpu"
    assert out[1].startswith("lut (as it is), all 16: MAPE %")
    # tiny subnets may rank against the table, and a split whose fit has a backward slope is refused,
    # counted and never scored (a CI run: 2 of 3 fitted)
    fitted = re.fullmatch(r"transfer, k 5 \((\d) splits(, (\d) refused)?\): MAPE % .* tau .*", out[2])
    if fitted:
        assert int(fitted.group(1)) + int(fitted.group(3) or 0) == 3
    else:
        assert out[2] == "transfer, k 5: every one of 3 splits refused (reasons on stderr)", out[2]
    assert out[3] == "lut+linear, k 5: needs at least 10 training subnets" and len(out) == 4


@pytest.mark.parametrize("extra, message", [(["--k", "3"], "--k sizes of at least 5"),
                                            (["--n", "8", "--k", "5"], "leaves fewer than 5 subnets to score")])
def test_bad_input_is_refused_before_measuring(tmp_path, capsys, benchmark_module, extra, message):
    with pytest.raises(SystemExit):
        benchmark_module("transfer").main(["--lut", str(tmp_path / "missing.json"), *extra])
    assert message in capsys.readouterr().err
