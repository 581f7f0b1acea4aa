"""benchmarks/darts_found_vs_random.py on a tiny finished SNAS run: random child graphs matched on
measured latency, every network trained, judged; a rerun trains nothing again."""

from __future__ import annotations

import json

import pytest

from hwnas.cli import main as cli_main
from hwnas.cli.methods.common import SMALL_CELL_ARGS

FAST = ["--measure-every", "0", "--final-sessions", "1", "--warmup", "1", "--min-runs", "5", "--min-time", "0",
        "--processes", "1", "--no-reference"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fvr") / "run"
    code = cli_main.main(["search", "--method", "snas", *SMALL_CELL_ARGS, "--limit", "96", *FAST,
                          "--db", str(out.parent / "m.sqlite"), "--out", str(out)])
    assert code == 0
    return out


def test_random_networks_are_matched_on_measured_latency_trained_and_judged(finished_run, tmp_path, capsys,
                                                                          benchmark_module):
    bench = benchmark_module("darts_found_vs_random")
    argv = [str(finished_run), "--random", "2", "--seeds", "1", "--found-seeds", "2", "--epochs", "1", "--limit", "96",
            "--processes", "1", "--tolerance", "0.5", "--prefilter", "0.9", "--allow-flagged", "--jobs", "2",
            "--db", str(tmp_path / "m.sqlite"), "--out", str(tmp_path / "cmp")]
    bench.main(argv)
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    found, *randoms = summary["networks"]
    assert found["kind"] == "found" and len(found["test_acc_seeds"]) == 2 and len(randoms) == 2
    assert all(abs(r["measured_ms"] / found["measured_ms"] - 1) <= 0.5 and len(r["test_acc_seeds"]) == 1 for r in randoms)
    assert summary["found_test_acc"] == pytest.approx(sum(found["test_acc_seeds"]) / 2)
    assert summary["random_test_acc"] == [r["test_acc_seeds"][0] for r in randoms]
    assert summary["matching"]["measured"] >= 2 and "SE" in capsys.readouterr().out
    results = tmp_path / "cmp" / "results.json"
    before = results.stat().st_mtime_ns
    bench.main(argv)  # every training is reused: nothing is written again
    assert results.stat().st_mtime_ns == before
    other = list(argv)
    other[other.index("--epochs") + 1] = "2"
    with pytest.raises(SystemExit, match="another recipe"):
        bench.main(other)


def test_a_directory_that_is_not_a_finished_run_is_one_line(tmp_path, benchmark_module):
    with pytest.raises(SystemExit, match="is not a finished cell search run"):
        benchmark_module("darts_found_vs_random").main([str(tmp_path), "--out", str(tmp_path / "cmp")])
