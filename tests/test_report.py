"""`hwnas report` on real inputs: tiny UNAS and TF-NAS runs measured on ort-cpu, a small store
with subnets and layer pairs, trained results; then bad and partial inputs."""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.backends import get_backend
from hwnas.cli import main as cli_main
from hwnas.data import load_dataset
from hwnas.measure import Measurer
from hwnas.search import tfnas, unas
from hwnas.search.train import train_arch
from hwnas.spaces.mbconv import Space, distinct_layers
from hwnas.store import Store
from hwnas.surrogates.additivity import additivity
from hwnas.surrogates.data import Subnets, sample
from hwnas.surrogates.evaluate import evaluate
from hwnas.surrogates.lut import LookupTable, entry_key, with_unaligned

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
VOID = {"meta", "img", "br", "hr", "input", "link", "col", "area", "base", "wbr", "source"}


def run_cli(args, capsys):
    if "hwnas.cli.report" not in cli_main.COMMAND_MODULES:
        cli_main.COMMAND_MODULES.append("hwnas.cli.report")
    code = cli_main.main(["report", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def synthetic_lut(space, measurer, protocol) -> LookupTable:
    """A table in the real file format with made-up per-layer values (measuring every layer
    takes minutes); the report compares it with real measurements all the same."""
    points = {}
    for s in with_unaligned(space, distinct_layers(space, 1, 8), 4):
        ms = 0.01 + 5e-5 * s.kernel * s.mid * s.h / 8 if s.kind == "mbinvres" else 0.02
        points.setdefault(entry_key(s), {})[s.mid] = ms
    return LookupTable(space, 1, "ort-cpu", measurer.backend.fingerprint(1), protocol.to_json(), 8,
                       {k: (sorted(p), [p[m] for m in sorted(p)]) for k, p in points.items()})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from hwnas.backends import MeasureProtocol

    root = tmp_path_factory.mktemp("report-inputs")
    space = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=20, min_time_s=0.0, processes=1, reference=False)
    store = Store(root / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, protocol)
    lut = synthetic_lut(space, measurer, protocol)
    lut.save(root / "lut.json")
    sample(space, measurer, 3, seed=0, show_progress=False)
    additivity(space, measurer, n_pairs=2, show_progress=False)
    data = load_dataset("digits", seed=0, limit=120)
    info = {"latency_model_file": str(root / "lut.json"), "limit": 120}
    floor = measurer.arch(space, unas.fastest_arch(space)).measurement.median_ms
    unas.search(unas.UNASConfig(target_ms=3 * floor, epochs=2, warmup_epochs=1, batch_size=32, train_resolution=16,
                                lam_ramp_epochs=1, calibrate_widths=False),
                data, lut, root / "unas", measurer=measurer, lut=lut, run_info={**info, "backend": "ort-cpu"},
                show_progress=False)
    tfnas.search(tfnas.TFNASConfig(target_ms=lut.predict(space.default_arch()), epochs=2, warmup_epochs=1,
                                   batch_size=32, train_resolution=16, measure_every=1),
                 data, lut, root / "tfnas", measurer=measurer, run_info=info, show_progress=False)
    train_space = Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)
    final = json.loads((root / "unas" / "final_arch.json").read_text())
    for name, arch in (("trained_final", final), ("trained_random", space.random_archs(1, 3)[0].to_json())):
        result = train_arch(train_space, arch, data, epochs=1, batch_size=32, show_progress=False)
        (root / f"{name}.json").write_text(json.dumps(result))
    measurer.arch(space, space.random_archs(1, 3)[0])  # the random architecture's latency, as `hwnas measure` would
    # not measured, scaled to 1.234 ms under some other latency model (as benchmarks/search_vs_random.py writes)
    scaled = space.random_archs(1, 4)[0]
    result = {**json.loads((root / "trained_random.json").read_text()), "arch": scaled.to_json(),
              "arch_hash": scaled.hash, "predicted_ms": 1.234}
    (root / "trained_scaled.json").write_text(json.dumps(result))
    store.close()
    return root


@pytest.fixture(scope="module")
def full_report(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "full"
    args = [inputs / "unas", inputs / "tfnas", "--store", inputs / "m.sqlite", "--trained", inputs / "trained_final.json",
            "--trained", inputs / "trained_random.json", "--trained", inputs / "trained_scaled.json", "--out", out]
    if "hwnas.cli.report" not in cli_main.COMMAND_MODULES:
        cli_main.COMMAND_MODULES.append("hwnas.cli.report")
    assert cli_main.main(["report", *map(str, args)]) == 0
    return out


class Structure(HTMLParser):
    """Checks that every element is closed in order and collects the images."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def parse_html(path: Path) -> Structure:
    p = Structure()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def test_html_is_well_formed_self_contained_and_every_image_is_a_png(full_report):
    from PIL import Image

    text = (full_report / "report.html").read_text(encoding="utf-8")
    p = parse_html(full_report / "report.html")
    assert not p.errors and not p.stack
    assert p.tags[0] == "html" and "script" not in p.tags and "link" not in p.tags
    assert not re.search(r"(src|href)=\"https?:", text)  # readable offline
    pngs = sorted(f.stem for f in full_report.glob("*.png"))
    assert len(p.images) == len(pngs) >= 7
    for img in p.images:
        assert img["src"].startswith("data:image/png;base64,")
        raw = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 1000
        im = Image.open(io.BytesIO(raw))
        im.verify()
        assert im.size[0] > 200 and im.size[1] > 100


def test_every_figure_and_table_has_its_csv(full_report):
    contents = pd.read_csv(full_report / "contents.csv").fillna("")
    named = set(contents["csv"]) - {""}
    for png in full_report.glob("*.png"):
        assert f"{png.stem}.csv" in named
    for name in named:
        assert (full_report / name).is_file() and len(pd.read_csv(full_report / name)) >= 1, name
    expected = {"lookup_scatter", "lookup_error_hist", "lookup_error_stats", "lookup_error_by_stage_op",
                "additivity_pairs", "additivity_summary", "runs", "search_unas", "search_tfnas", "accuracy_latency",
                "target_precision", "fingerprints", "run_configs"}
    assert expected <= {Path(n).stem for n in named}
    html_text = (full_report / "report.html").read_text()
    for name in named:
        assert f'href="{name}"' in html_text  # each figure and table links its data


def test_every_number_in_the_summary_is_in_a_csv(full_report):
    md = (full_report / "summary.md").read_text()
    csv_tokens = set()
    for f in full_report.glob("*.csv"):
        csv_tokens |= set(NUMBER.findall(f.read_text()))
    numbers = NUMBER.findall(md)
    assert len(numbers) > 50
    missing = sorted(set(numbers) - csv_tokens)
    assert not missing, missing[:20]
    # Tables: each numeric cell is in the very CSV the table names.
    blocks = re.findall(r"data: `([\w.-]+\.csv)`\n\n(\|.*?)(?:\n\n|\Z)", md, re.DOTALL)
    assert len(blocks) >= 6
    for name, table in blocks:
        tokens = set(NUMBER.findall((full_report / name).read_text()))
        for line in table.splitlines()[2:]:
            for cell in line.strip("|").split(" | "):
                for n in NUMBER.findall(cell):
                    assert n in tokens, (name, n)


def test_contents_of_the_sections(full_report, inputs):
    points = pd.read_csv(full_report / "lookup_scatter.csv")
    assert {"store", "unas samples", "final"} <= set(points["source"])
    assert (points["measured_ms"] > 0).all() and (points["lookup_ms"] > 0).all()
    row = points.iloc[0]
    assert row["error_pct"] == pytest.approx(100 * (row["lookup_ms"] - row["measured_ms"]) / row["measured_ms"], rel=2e-3)
    pairs = pd.read_csv(full_report / "additivity_pairs.csv")
    assert len(pairs) == 2 and set(pairs["fused"]) <= {True, False}
    unas_log = pd.read_csv(full_report / "search_unas.csv")
    assert list(unas_log["epoch"]) == [1, 2] and {"lookup_ms", "surrogate_ms", "measured_ms", "val_acc",
                                                  "alpha_entropy"} <= set(unas_log.columns)
    tf_log = pd.read_csv(full_report / "search_tfnas.csv")
    assert {"lookup_ms", "measured_ms", "train_acc"} <= set(tf_log.columns)  # tfnas's lut prediction is a lookup
    acc = pd.read_csv(full_report / "accuracy_latency.csv").set_index("label")
    trained = json.loads((inputs / "trained_final.json").read_text())
    assert acc.loc["unas", "accuracy_source"] == "trained test_acc"
    assert acc.loc["unas", "accuracy"] == pytest.approx(trained["test_acc"], rel=1e-3)
    assert acc.loc["tfnas", "accuracy_source"].startswith("supernet val_acc")
    assert acc.loc["trained_random", "kind"] == "random" and acc.loc["trained_random", "latency_source"].startswith("measured")
    # its own model's latency, not the report's table: it was scaled to a target under that model
    assert acc.loc["trained_scaled", "latency_source"] == "predicted" and acc.loc["trained_scaled", "latency_ms"] == 1.234
    assert acc["pareto"].any()
    summary = json.loads((inputs / "unas" / "summary.json").read_text())
    target = pd.read_csv(full_report / "target_precision.csv").set_index("run")
    expect = 100 * (summary["measured_ms"] - summary["target_ms"]) / summary["target_ms"]
    assert target.loc["unas", "measured_error_pct"] == pytest.approx(expect, rel=1e-3, abs=1e-3)
    # the final measurement's interval and flags stand beside it
    ci = summary["measured_ci95_ms"]
    assert len(ci) == 2 and ci[0] <= summary["measured_ms"] <= ci[1]
    assert target.loc["unas", "ci_low_ms"] == pytest.approx(ci[0], rel=1e-3)
    assert target.loc["unas", "ci_high_ms"] == pytest.approx(ci[1], rel=1e-3)
    assert (target["flags"].fillna("") == [",".join(json.loads((inputs / run / "summary.json").read_text())
                                                    ["measured_flags"] or []) for run in target.index]).all()
    fps = pd.read_csv(full_report / "fingerprints.csv")
    assert "backend" in set(fps["field"]) and "ort-cpu" in set(fps.iloc[:, 1])
    notes = pd.read_csv(full_report / "notes.csv")
    assert notes["note"].str.contains("no surrogate metrics given").any()  # the report fits no model
    assert notes["note"].str.contains("width 1.0 only").any()  # no reference architectures at width 0.25


def test_partial_old_and_unknown_runs_are_warnings(inputs, tmp_path, capsys):
    half = tmp_path / "half"
    shutil.copytree(inputs / "tfnas", half)
    (half / "summary.json").unlink()
    (half / "final_arch.json").unlink()
    log = (half / "log.jsonl").read_text().splitlines()
    (half / "log.jsonl").write_text(log[0] + "\n" + log[1][:40])  # the second epoch cut short by a crash
    old = tmp_path / "old"
    old.mkdir()
    (old / "log.jsonl").write_text('{"epoch": 1}\n')
    odd = tmp_path / "odd"
    shutil.copytree(inputs / "unas", odd)
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "method": "darts"}))
    out = tmp_path / "r"
    code, _, err = run_cli([half, old, odd, "--store", inputs / "m.sqlite", "--out", out], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line]
    assert all(line.startswith("hwnas: warning: ") for line in lines)
    assert any("older hwnas" in line for line in lines)
    assert any("unknown search method 'darts'" in line for line in lines)
    assert any("incomplete: 1 of 2 epochs" in line for line in lines)
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["run"]) == ["half"] and runs["status"][0].startswith("incomplete")
    assert list(pd.read_csv(out / "search_half.csv")["epoch"]) == [1]
    assert pd.read_csv(out / "target_precision.csv")["status"][0] == "incomplete"
    assert "incomplete" in (out / "summary.md").read_text()
    assert not parse_html(out / "report.html").errors


def test_no_runs_reports_the_store_and_table(inputs, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(["--store", inputs / "m.sqlite", "--lut", inputs / "lut.json",
                            "--out", out], capsys)
    assert code == 0
    assert err.strip().splitlines() == [("hwnas: warning: no run directories given: reporting the store, lookup table "
                                         "and trained results only")]
    assert set(pd.read_csv(out / "lookup_scatter.csv")["source"]) == {"store"}
    assert (out / "additivity_summary.csv").exists() and not (out / "runs.csv").exists()
    # the store holds measured subnets, and still the report fits no latency model: it shows
    # only what `hwnas surrogate eval` scored
    assert not (out / "surrogate_metrics.csv").exists()
    assert "`hwnas surrogate eval --out metrics.csv`" in (out / "summary.md").read_text()


def test_nothing_to_report_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HWNAS_DB", str(tmp_path / "absent.sqlite"))
    for args in ([tmp_path / "missing"], [], ["--store", tmp_path / "absent.sqlite"]):
        code, _, err = run_cli([*args, "--out", tmp_path / "r"], capsys)
        assert code == 2
        assert err.strip().splitlines()[-1].startswith("hwnas: error: nothing to report")
    assert not (tmp_path / "absent.sqlite").exists()  # a report never creates a store


def test_surrogate_metrics_from_an_eval_csv(inputs, tmp_path, capsys):
    lut = LookupTable.load(inputs / "lut.json")
    archs = lut.space.random_archs(40, 11)
    measured = np.array([lut.predict(a) for a in archs]) * np.random.default_rng(0).uniform(0.9, 1.2, len(archs))
    data = Subnets(archs, measured)
    curves = evaluate(["lut", "linear"], data.take(range(30)), data.take(range(30, 40)), lut, lut.space)
    curves.to_csv(tmp_path / "eval.csv", index=False)
    out = tmp_path / "r"
    code, _, err = run_cli([inputs / "unas", "--surrogates", tmp_path / "eval.csv", "--out", out], capsys)
    assert code == 0, err
    got = pd.read_csv(out / "surrogate_metrics.csv").set_index("model")
    want = curves.loc[curves.groupby("model")["n_train"].idxmax()].set_index("model")
    for model in ("lut", "linear"):
        assert got.loc[model, "mape_pct"] == pytest.approx(want.loc[model, "mape_pct"], rel=1e-3)
        assert got.loc[model, "kendall_tau"] == pytest.approx(want.loc[model, "kendall_tau"], rel=1e-3, abs=1e-3)
    assert (out / "surrogate_learning_curves.png").exists()
