"""What the cell searches (SNAS, EnTranNAS) share: a supernet trained at one size whose cells are
deployed, looked up and measured at another (--deploy-*)."""

from __future__ import annotations

import json

import pytest

from hwnas.cli import main as cli_main
from hwnas.cli.methods.common import SMALL_CELL_ARGS
from hwnas.errors import HwnasError
from hwnas.spaces import get_space

# As the conformance suite: fast timing, one process, no reference; nothing here is a latency figure.
SHARED = ["--limit", "64", "--measure-every", "1", "--final-sessions", "1", "--warmup", "1", "--min-runs", "5",
          "--min-time", "0", "--processes", "1", "--no-reference"]


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    code = cli_main.main(["search", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["snas", "entrannas"])
def test_cells_trained_small_are_costed_and_measured_at_the_deployment_size(monkeypatch, capsys, tmp_path, method):
    out = tmp_path / "run"
    code, text, err = cli(monkeypatch, capsys, "--method", method, *SMALL_CELL_ARGS, *SHARED, "--db",
                          str(tmp_path / "m.sqlite"), "--out", str(out), "--deploy-cells", "3", "--deploy-resolution", "16")
    assert code == 0, err[-3000:]
    summary = json.loads(text)
    deploy = get_space("darts", channels=2, cells=3, resolution=16, num_classes=10)
    trained = get_space("darts", channels=2, cells=2, resolution=8, num_classes=10)
    config = json.loads((out / "config.json").read_text())
    assert config["space"] == trained.config and config["deploy"] == deploy.config
    assert summary["space"] == deploy.config  # the final network was measured at the deployment size
    table = json.loads((out / "cell_lut.json").read_text())
    assert table["space"] == deploy.config
    arch = deploy.validate(json.loads((out / "final_arch.json").read_text()))
    assert summary["params_m"] == pytest.approx(deploy.costs(arch)["params"] / 1e6)
    assert summary["params_m"] != pytest.approx(trained.costs(arch)["params"] / 1e6)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["params_m"] == pytest.approx(deploy.costs(deploy.validate(r["arch"]))["params"] / 1e6) for r in log)
    assert all(r["measured_ms"] > 0 for r in log)


@pytest.mark.parametrize("bad, names", [(["--deploy-cells", "0"], "--deploy-cells"),
                                        (["--deploy-resolution", "2"], "--deploy-resolution")])
def test_a_bad_deployment_size_is_one_line(monkeypatch, capsys, tmp_path, bad, names):
    code, _, err = cli(monkeypatch, capsys, "--method", "snas", *SMALL_CELL_ARGS, "--out", str(tmp_path / "r"), *bad)
    assert code == 2 and names in err and "Traceback" not in err


def test_a_table_of_the_training_size_is_refused_when_the_cells_deploy_elsewhere(tmp_path):
    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.data import load_dataset
    from hwnas.latency.cells import CellLatencyTable
    from hwnas.measure import Measurer
    from hwnas.search.snas import SNASConfig, search
    from hwnas.store import Store

    trained = get_space("darts", channels=2, cells=2, resolution=8, num_classes=10)
    deploy = get_space("darts", channels=4, cells=2, resolution=8, num_classes=10)
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0, processes=1, reference=False)
    with Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), protocol, cache_dir=tmp_path) as measurer:
        table = CellLatencyTable.build(trained, measurer, show_progress=False)
    cfg = SNASConfig(resource="latency", target=1.0, epochs=1)
    with pytest.raises(HwnasError, match="cell latency table is for .*channels=2.*not .*channels=4"):
        search(cfg, trained, load_dataset("digits", seed=0, limit=64), tmp_path / "r", table=table, deploy=deploy)
    assert not (tmp_path / "r").exists()
