"""benchmarks/table_reads.py on the session's tiny table: one line per network measured, then the
table's reading per kind, and bad input in one line."""

from __future__ import annotations

import json

import pytest


def test_the_table_reading_of_found_and_random_networks(lab, tmp_path, capsys, benchmark_module):
    from hwnas.surrogates.base import uniform_latency

    lut = tmp_path / "lut.json"
    lab.lut.save(lut)
    run = tmp_path / "run"
    run.mkdir()
    found = lab.space.random_archs(1, seed=5, align=4)[0]
    (run / "final_arch.json").write_text(json.dumps(found.to_json()))
    target = uniform_latency(lab.lut)
    bench = benchmark_module("table_reads")
    bench.main(["--lut", str(lut), "--runs", str(run), "--random", "2", "--target", str(target), "--processes", "1",
                "--min-time", "0", "--db", str(tmp_path / "m.sqlite")])
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines[:3]]
    assert [r["kind"] for r in rows] == ["found", "random", "random"]
    assert rows[0]["table_ms"] == pytest.approx(lab.lut.predict(found), abs=1e-4)
    for r in rows:
        assert r["measured_ms"] > 0 and r["table_reads"] == pytest.approx(r["table_ms"] / r["measured_ms"], rel=1e-2)
    assert lines[3].startswith("found: ") and lines[4].startswith("random: ") and len(lines) == 5
    with pytest.raises(SystemExit, match="table_reads: .*final architecture"):
        bench.main(["--lut", str(lut), "--runs", str(tmp_path / "missing"), "--random", "0"])
