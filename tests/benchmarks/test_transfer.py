"""benchmarks/transfer.py: the session's tiny ort-cpu table carried to torch-cpu, measured for real."""

from __future__ import annotations

import pytest


def test_a_table_carried_to_another_backend(lab, tmp_path, capsys, benchmark_module):
    lut = tmp_path / "lut.json"
    lab.lut.save(lut)
    bench = benchmark_module("transfer")
    argv = ["--lut", str(lut), "--backend", "torch-cpu", "--n", "16", "--k", "5", "--splits", "3", "--processes", "1",
            "--min-time", "0", "--db", str(tmp_path / "m.sqlite")]
    try:
        bench.main(argv)
        finished = True
    except SystemExit as e:  # a noisy machine may flag too many: then it says so, and scores nothing
        assert "usable subnets leave fewer than 5 to score" in str(e)
        finished = False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("torch-cpu: ") and out[0].endswith("table from ort-cpu")
    usable = int(out[0].split()[1])
    assert 0 <= usable <= 16 and finished == (usable >= 10)
    if finished:
        assert out[1].startswith(f"lut (as it is), all {usable}: MAPE %")
        assert out[2].startswith("transfer, k 5 (") and "tau" in out[2]
        assert out[3] == "lut+linear, k 5: needs at least 10 training subnets"


@pytest.mark.parametrize("extra, message", [(["--k", "3"], "--k sizes of at least 5"),
                                            (["--n", "8", "--k", "5"], "leaves fewer than 5 subnets to score")])
def test_bad_input_is_refused_before_measuring(tmp_path, capsys, benchmark_module, extra, message):
    with pytest.raises(SystemExit):
        benchmark_module("transfer").main(["--lut", str(tmp_path / "missing.json"), *extra])
    assert message in capsys.readouterr().err
