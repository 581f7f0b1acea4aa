"""benchmarks/search_quality.py on the session's tiny table: it runs a method end to end, writes its
table, and a finished comparison reruns without searching, training or measuring again."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def test_a_finished_comparison_reruns_in_seconds(lab, tmp_path, benchmark_module, capsys):
    from hwnas.surrogates.base import uniform_latency

    lut = tmp_path / "lut.json"
    lab.lut.save(lut)
    target = round(0.9 * uniform_latency(lab.lut), 4)
    argv = ["--work", str(tmp_path / "work"), "--lut", str(lut), "--methods", "tfnas-lut", "--targets", str(target),
            "--seeds", "1", "--epochs", "2", "--warmup-epochs", "1", "--limit", "120", "--train-epochs", "1",
            "--random", "2", "--size", "--space tfnas --resolution 32 --width-mult 0.25",
            "--search-args", "--processes 1 --no-reference --final-sessions 1 --measure-every 0 --min-time 0 --warmup 1",
            "--db", str(tmp_path / "m.sqlite")]
    bench = benchmark_module("search_quality")
    bench.main(argv)
    table = pd.read_csv(tmp_path / "work" / "search_quality.csv")
    assert list(table["method"]) == ["tfnas-lut"] and table["target_ms"].iloc[0] == target
    assert 0 <= table["found_acc"].iloc[0] <= 1 and table["n_random"].iloc[0] == 2
    assert table["wall_s"].iloc[0] > 0
    flagged = table["landings_flagged"].iloc[0]  # counted; the landing column pools only the others
    assert flagged in (0, 1) and pd.isna(table["measured_vs_target_pct"].iloc[0]) == (flagged == 1)
    # the random architectures get the found one's latency under the table, not the nominal target
    trained = next((tmp_path / "work").rglob("trained"))
    found_ms = json.loads((trained / "found.json").read_text())["predicted_ms"]
    assert json.loads((trained / "summary.json").read_text())["matched_ms"] == found_ms
    for f in trained.glob("random_*.json"):  # as close under it as aligned widths allow (one step is ~8% here)
        assert 0.8 * found_ms < json.loads(f.read_text())["predicted_ms"] <= found_ms * (1 + 1e-6)
    kept = {f: f.stat().st_mtime_ns for f in (tmp_path / "work").rglob("*") if f.is_file() and f.suffix != ".csv"}
    bench.main(argv)  # nothing is searched, trained or measured again: every file is as it was
    assert {f: f.stat().st_mtime_ns for f in kept} == kept
    assert pd.read_csv(tmp_path / "work" / "search_quality.csv").equals(table)
    # a rerun with other settings is refused with one line, never answered with the old results
    other = argv[:argv.index("--search-args") + 1] + [argv[argv.index("--search-args") + 1] + " --arch-lr 0.5"] + \
        argv[argv.index("--search-args") + 2:]
    with pytest.raises(SystemExit, match="was run with search_options .*give another --work"):
        bench.main(other)
    with pytest.raises(SystemExit, match="was run with random 2, not 3; give another --work"):
        bench.main([*argv, "--random", "3"])
    assert {f: f.stat().st_mtime_ns for f in kept} == kept
    # methods run apart end in one table: a rerun replaces its own rows and keeps the others'
    csv = tmp_path / "work" / "search_quality.csv"
    pd.concat([table.assign(method="unas-lut"), table]).to_csv(csv, index=False)
    bench.main(argv)
    merged = pd.read_csv(csv)
    assert list(merged["method"]) == ["tfnas-lut", "unas-lut"]
    assert merged.iloc[:1].equals(table) and merged.iloc[1:].drop(columns="method").reset_index(drop=True).equals(
        table.drop(columns="method"))
    pd.DataFrame(table).to_csv(csv, index=False)
    with pytest.raises(SystemExit):
        bench.main([*argv[:argv.index("--methods") + 1], "unas-corrected", *argv[argv.index("--methods") + 2:]])
    assert "unas-corrected needs --corrected" in capsys.readouterr().err

    from hwnas.report.document import build

    rep = build([], quality=tmp_path / "work" / "search_quality.csv")
    section = next(s for s in rep.sections if s.title == "Every method on one hardware target")
    assert "landings_flagged" in section.items[0].df and any("landings_flagged" in n for n in section.notes)
    assert section.items[0].df["search_args"].tolist() == [argv[argv.index("--search-args") + 1]]
