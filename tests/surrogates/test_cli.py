"""The CLI end to end on a tiny space, with real measurements on ONNX Runtime."""

import csv
import json

import pandas as pd
import pytest

from hwnas.cli import main as cli_module
from hwnas.surrogates.lut import LookupTable
from hwnas.surrogates.models import load_model

MODULE = "hwnas.cli.surrogates"
SPACE = ["--space", "proxyless", "--resolution", "32", "--width-mult", "0.25", "--classes", "10"]
FAST = ["--warmup", "1", "--min-runs", "20", "--min-time", "0", "--processes", "1", "--no-reference"]


@pytest.fixture
def hwnas(monkeypatch, capsys):
    if MODULE not in cli_module.COMMAND_MODULES:
        monkeypatch.setattr(cli_module, "COMMAND_MODULES", [*cli_module.COMMAND_MODULES, MODULE])

    def run(*args, ok=True):
        rc = cli_module.main([str(a) for a in args])
        out = capsys.readouterr()
        if ok:
            assert rc == 0, out.err
        return rc, out.out, out.err

    return run


def _one_error_line(rc, err, match):
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("hwnas: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def test_end_to_end(hwnas, measured):
    db, lut = measured / "db.sqlite", measured / "lut.json"
    _, out, _ = hwnas("lut", "build", *SPACE, *FAST, "--db", db, "--out", lut)
    assert "newly measured" in out and "overhead" in out and lut.exists()
    table = LookupTable.load(lut)
    assert table.space.name == "proxyless" and table.op_ms(1, 1, "skip", 0) == 0.0
    _, out, _ = hwnas("lut", "build", *SPACE, *FAST, "--db", db, "--out", lut)
    assert "(0 newly measured)" in out  # the store makes a rebuild free

    hwnas("sample", *SPACE, *FAST, "--db", db, "--n", 20, "--seed", 1, "--out", measured / "subnets.csv")
    assert len(pd.read_csv(measured / "subnets.csv")) == 20

    metrics = measured / "metrics.csv"
    _, out, _ = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--lut", lut, "--model", "lut,linear,lut+linear",
                      "--test", 5, "--out", metrics)
    df = pd.read_csv(metrics)
    assert set(df["model"]) == {"lut", "linear", "lut+linear"}
    assert (df["n_test"] == 5).all() and (df.loc[df["model"] == "linear", "n_train"] == 15).all()
    for col in ("rmse_ms", "mape_pct", "within5_pct", "within10_pct", "kendall_tau", "spearman_rho", "max_err_ms"):
        assert df[col].notna().all(), col
    assert "lut+linear" in out

    # the held-out subnets measured again into a second store: the floor, and the verdicts
    _, out, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--lut", lut, "--model", "lut,linear", "--test", 5,
                        "--no-curve", "--repeat-db", measured / "again.sqlite", "--out", metrics)
    df = pd.read_csv(metrics).set_index("model")
    assert list(df.index) == ["repeat", "lut", "linear"] and df.loc["repeat", "n_test"] == 5
    assert df.loc["repeat", "mape_pct"] < 50 and df.loc["linear", "beats_lut"] in (True, False)
    assert len(pd.read_sql_table("measurements", f"sqlite:///{measured / 'again.sqlite'}")) >= 5

    model = measured / "model.json"
    _, out, _ = hwnas("surrogate", "fit", *SPACE, *FAST, "--db", db, "--lut", lut, "--model", "lut+linear",
                      "--out", model)
    assert "fitted on 20 subnets" in out
    m = load_model(model)
    assert m.predict(m.space.default_arch()) > 0

    pairs = measured / "pairs.csv"
    _, out, _ = hwnas("additivity", *SPACE, *FAST, "--db", db, "--n", 3, "--out", pairs)
    df = pd.read_csv(pairs)
    assert len(df) == 3
    assert (df["t12_ms"] > 0).all() and "non-additive share" in out
    row = df.iloc[0]
    assert row["nonadditive_ms"] == pytest.approx(row["t1_ms"] + row["t2_ms"] - row["t12_ms"])


def test_eval_on_an_external_csv(hwnas, measured, tmp_path):
    """The store's subnets, written as a user's CSV, give the same metrics as from the store."""
    from hwnas.spaces.mbconv import Space

    space = Space("proxyless", resolution=32, width_mult=0.25, num_classes=10)
    db = measured / "db.sqlite"
    if not db.exists():
        pytest.skip("needs test_end_to_end's measurements")
    from hwnas.store import Store

    rows = Store(db).dataframe(kind="arch")
    path = tmp_path / "ext.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        for spec, ms in zip(rows["spec"], rows["median_ms"]):
            w.writerow([json.dumps(space.validate(spec["arch"]).to_json()), ms])
    _, out, _ = hwnas("surrogate", "eval", *SPACE, "--csv", path, "--model", "linear", "--test", 5, "--no-curve")
    assert "linear" in out


def test_bad_inputs_are_one_line(hwnas, measured, tmp_path):
    db, lut = measured / "db.sqlite", measured / "lut.json"
    if not lut.exists():
        pytest.skip("needs test_end_to_end's table")
    other = ["--space", "proxyless", "--resolution", "64", "--width-mult", "0.25", "--classes", "10"]
    rc, _, err = hwnas("surrogate", "eval", *other, *FAST, "--db", db, "--lut", lut, "--model", "lut", ok=False)
    _one_error_line(rc, err, "is for another space: resolution 32 (asked for 64)")
    rc, _, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--lut", lut, "--batch", 2, "--model", "lut",
                       ok=False)
    _one_error_line(rc, err, "is for batch 1, not 2")

    empty = tmp_path / "empty.sqlite"
    rc, _, err = hwnas("surrogate", "fit", *SPACE, *FAST, "--db", empty, "--model", "linear", "--out", tmp_path / "m.json",
                       ok=False)
    _one_error_line(rc, err, "model linear needs at least 10 measured training subnets, got 0: measure more with "
                             "`hwnas sample --space proxyless --resolution 32 --width-mult 0.25 --classes 10")
    rc, _, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", empty, "--model", "linear", ok=False)
    _one_error_line(rc, err, "holds 0 measured subnets; linear with 5 held out need at least 15: measure more with")

    broken = tmp_path / "broken.json"
    broken.write_text(lut.read_text()[:500])
    rc, _, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--lut", broken, "--model", "lut", ok=False)
    _one_error_line(rc, err, "is not valid JSON")

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text('arch,latency_ms\n"{""width_mult"": 0.25}",1.0\n')
    rc, _, err = hwnas("surrogate", "eval", *SPACE, "--csv", bad_csv, "--model", "linear", ok=False)
    _one_error_line(rc, err, "line 2: architecture.stages must be a list")

    rc, _, err = hwnas("sample", *SPACE, "--db", db, "--n", 2, "--scale-to", "1:2", ok=False)
    _one_error_line(rc, err, "--scale-to needs --lut")
    rc, _, err = hwnas("sample", *SPACE, "--db", db, "--n", 2, "--scale-to", "1-2", "--lut", lut, ok=False)
    _one_error_line(rc, err, "--scale-to takes LO:HI in ms")
    rc, _, err = hwnas("sample", *SPACE, *FAST, "--db", db, "--n", 2, "--scale-to", "1:2", "--lut", lut, ok=False)
    _one_error_line(rc, err, "needs elastic widths; proxyless has none")
    rc, _, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--lut", lut, "--model", "lut", "--repeat-db",
                       str(db), ok=False)
    _one_error_line(rc, err, "--repeat-db must be another store than --db")
    rc, _, err = hwnas("surrogate", "eval", *SPACE, "--db", db, "--model", "lut,mlpp", ok=False)
    _one_error_line(rc, err, "unknown model 'mlpp'")


def test_a_table_of_another_target_is_transferred_only_when_asked(hwnas, measured, tmp_path):
    db, lut = measured / "db.sqlite", measured / "lut.json"
    if not lut.exists():
        pytest.skip("needs test_end_to_end's table and subnets")
    foreign = tmp_path / "foreign.json"  # the same table, as if measured on the torch runtime
    foreign.write_text(json.dumps({**json.loads(lut.read_text()), "backend": "torch-cpu"}))
    # this target as a CSV: every subnet 1.5x the other's table plus 0.1 ms (tiny real subnets here
    # read within noise of each other, and once ranked against the table: a fit of the map is
    # tested in test_models, the flags here)
    table = LookupTable.load(lut)
    subnets = tmp_path / "here.csv"
    with subnets.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        for arch in table.space.random_archs(12, seed=3):
            w.writerow([json.dumps(arch.to_json()), 1.5 * table.predict(arch) + 0.1])
    model = tmp_path / "transfer.json"
    fit = ["surrogate", "fit", *SPACE, *FAST, "--db", db, "--model", "transfer", "--out", model]
    rc, _, err = hwnas(*fit, "--lut", foreign, ok=False)
    _one_error_line(rc, err, "was measured on backend 'torch-cpu', not 'ort-cpu'; to map it to this target, add --transfer")
    rc, _, err = hwnas(*fit, "--transfer", ok=False)
    _one_error_line(rc, err, "--transfer needs --lut")
    no_table = ["--lut", foreign, "--transfer", "--csv", subnets]  # --transfer with models that read no table
    rc, _, err = hwnas("surrogate", "fit", *SPACE, *FAST, "--db", db, "--model", "linear", "--out", model, *no_table, ok=False)
    _one_error_line(rc, err, "--transfer maps a table to this target; --model linear reads no table")
    rc, _, err = hwnas("surrogate", "eval", *SPACE, *FAST, "--db", db, "--model", "linear", *no_table, ok=False)
    _one_error_line(rc, err, "none of --model linear reads a table")
    _, out, _ = hwnas(*fit, "--lut", foreign, "--transfer", "--csv", subnets)
    assert "transfer model fitted on 12 subnets" in out
    back = load_model(model, expect_batch=1)  # a model of this target on the other one's table
    assert back.lut.backend == "torch-cpu" and back.slope == pytest.approx(1.5) and back.offset == pytest.approx(0.1)


DARTS = ["--space", "darts", "--channels", "2", "--cells", "2", "--resolution", "16", "--classes", "10"]


def test_darts_networks_sampled_then_the_cell_table_scored_and_fitted(hwnas, tmp_path, monkeypatch):
    from hwnas.latency.cells import CellLatencyTable
    from hwnas.spaces import get_space

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "db.sqlite"
    hwnas("sample", *DARTS, *FAST, "--db", db, "--n", 12, "--out", tmp_path / "nets.csv")
    nets = pd.read_csv(tmp_path / "nets.csv")
    space = get_space("darts", channels=2, cells=2, resolution=16, num_classes=10)
    assert list(nets["name"]) == [a.hash for a in space.random_archs(12, 0)] and (nets["median_ms"] > 0).all()

    hwnas("surrogate", "eval", *DARTS, *FAST, "--db", db, "--test", 5, "--out", tmp_path / "metrics.csv")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["model"]) == ["cell-lut", "cell-lut+parts"]
    assert list(metrics["n_test"]) == [5, 5] and list(metrics["n_train"]) == [0, 7]
    assert (metrics["mape_pct"] >= 0).all()

    _, out, _ = hwnas("surrogate", "fit", *DARTS, *FAST, "--db", db, "--model", "cell-lut+parts", "--out",
                      tmp_path / "cells.json")
    assert out.startswith("cell-lut+parts on 12 measured networks: MAPE")
    fitted = CellLatencyTable.load(tmp_path / "cells.json", expect_space=space)  # what `search --latency-model` reads
    assert fitted.correction["n_fit"] == 12

    for args, match in [(["surrogate", "eval", "--transfer"], "--transfer is for the MBConv spaces"),
                        (["surrogate", "eval", "--model", "lut"], "--model is for the MBConv spaces"),
                        (["surrogate", "fit", "--model", "lut", "--out", tmp_path / "x.json"],
                         "unknown model 'lut' for the darts space; known: cell-lut, cell-lut+parts"),
                        (["sample", "--n", 2, "--scale-to", "1:2"], "--scale-to is for the MBConv spaces"),
                        (["surrogate", "eval", "--test", 50],
                         "holds 12 usable measured networks of darts(channels=2, cells=2")]:
        rc, _, err = hwnas(*args[:2], *DARTS, *FAST, "--db", db, *args[2:], ok=False) if args[0] == "surrogate" else \
            hwnas(args[0], *DARTS, *FAST, "--db", db, *args[1:], ok=False)
        _one_error_line(rc, err, match)
