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


# --- landing on a target (SNAS --land) ------------------------------------------------------------


def _log_probs(arch, keep: float = -0.01, other: float = -8.0):
    """Hand-made log-probabilities that favour `arch`'s own op on every edge."""
    import torch

    from hwnas.spaces.darts import CELL_TYPES, EDGES, N_EDGES, PRIMITIVES

    doc = arch.to_json()
    out = {}
    for kind in CELL_TYPES:
        lp = torch.full((N_EDGES, len(PRIMITIVES)), other)
        for e, (j, i) in enumerate(EDGES):
            lp[e, PRIMITIVES.index(doc[f"{kind}_edges"][j][i])] = keep
        out[kind] = lp
    return out


def _neighbours(space, arch):
    """Every valid child graph one edge's op away from `arch`."""
    from hwnas.errors import HwnasError
    from hwnas.spaces.darts import PRIMITIVES

    doc = arch.to_json()
    for kind in ("normal", "reduce"):
        for j, row in enumerate(doc[f"{kind}_edges"]):
            for i, now in enumerate(row):
                for op in PRIMITIVES:
                    if op != now:
                        edges = [list(r) for r in doc[f"{kind}_edges"]]
                        edges[j][i] = op
                        try:
                            yield space.validate({**doc, f"{kind}_edges": edges})
                        except HwnasError:
                            pass


def test_landing_closes_the_tables_gap_at_every_change_and_stops_within_tolerance(torch_cell_table):
    import numpy as np

    from hwnas.search.cellsearch import land

    space, table, _ = torch_cell_table
    rng = np.random.default_rng(3)
    start, other = space.sample(rng), space.sample(rng)
    for target in (table.predict(other), 0.9 * table.predict(start), 1.1 * table.predict(start)):
        landed, steps = land(space, start, _log_probs(start), table, target, tolerance=0.01)
        gaps = [abs(table.predict(start) - target)] + [abs(s["table_ms"] - target) for s in steps]
        assert all(b < a for a, b in zip(gaps, gaps[1:]))  # every change closes the gap
        assert steps == [] or steps[-1]["table_ms"] == pytest.approx(table.predict(landed))
        if abs(table.predict(landed) / target - 1) > 0.01:  # short of it only where no single change closes the gap
            gap = abs(table.predict(landed) - target)
            assert all(abs(table.predict(n) - target) >= gap for n in _neighbours(space, landed))
    # already there: nothing changes
    landed, steps = land(space, start, _log_probs(start), table, table.predict(start))
    assert steps == [] and landed.hash == start.hash


def test_landing_gives_up_the_least_probability_first(torch_cell_table):
    from hwnas.search.cellsearch import land
    from hwnas.spaces.darts import EDGES, PRIMITIVES

    space, table, _ = torch_cell_table
    doc = {"space": "darts",
           "normal_edges": [["sep_conv_5x5"] * (2 + j) for j in range(4)], "normal_concat": [2, 3, 4, 5],
           "reduce_edges": [["sep_conv_5x5"] * (2 + j) for j in range(4)], "reduce_concat": [2, 3, 4, 5]}
    start = space.validate(doc)
    lp = _log_probs(start)
    lp["normal"][5, PRIMITIVES.index("skip_connect")] = -0.02  # nearly as likely as sep_conv_5x5 on edge 5
    landed, steps = land(space, start, lp, table, 0.5 * table.predict(start), tolerance=0.01)
    j, i = EDGES[5]
    assert steps[0]["change"] == f"normal edge {i}->{j + 2}: sep_conv_5x5 -> skip_connect"


def test_landing_never_takes_or_leaves_an_op_the_search_gives_no_probability(torch_cell_table):
    """EnTranNAS has no `none` candidate: with its column -inf, landing changes the live edges'
    ops only, and the derived topology stays."""
    import numpy as np
    import torch

    from hwnas.search.cellsearch import land

    space, table, _ = torch_cell_table
    start = space.sample(np.random.default_rng(1))
    lp = _log_probs(start)
    for t in lp.values():
        t[:, 0] = -torch.inf
    for target in (0.6 * table.predict(start), 1.4 * table.predict(start)):
        landed, steps = land(space, start, lp, table, target)
        assert steps  # something changed ...
        for kind in ("normal", "reduce"):  # ... but no edge was added or cut
            assert [op == "none" for op in landed.cell(kind).edges] == [op == "none" for op in start.cell(kind).edges]


def test_the_kept_landing_round_is_the_one_whose_interval_lies_nearest_the_target():
    from hwnas.search.cellsearch import choose_round

    def rnd(ms, lo, hi, *flags):
        return {"measured_ms": ms, "measured_ci95_ms": [lo, hi], "measured_flags": list(flags)}

    far_usable = rnd(0.914, 0.905, 0.921)  # -8.6%, a narrow interval
    near_noisy = rnd(1.008, 0.985, 1.030, "noisy", "retried")  # +0.8%, at worst +3.0%
    assert choose_round([far_usable, near_noisy], 1.0) == 1
    wide_noisy = rnd(1.008, 0.88, 1.12, "noisy")  # at worst 12% off: the usable round's worst is 9.5%
    assert choose_round([far_usable, wide_noisy], 1.0) == 0
    assert choose_round([far_usable, rnd(1.0, 0.999, 1.001, "disturbed")], 1.0) == 0  # disturbed never
    assert choose_round([rnd(1.0, 0.99, 1.01, "disturbed"), {"table_ms": 1.0}], 1.0) is None
    assert choose_round([rnd(1.05, 1.04, 1.06), rnd(0.97, 0.965, 0.975)], 1.0) == 1


def test_landing_is_first_aimed_where_the_last_usable_measurement_puts_the_table():
    from hwnas.search.cellsearch import measured_table_target

    log = [{"table_ms": 1.2, "measured_ms": 1.0, "measured_flags": []},  # usable, but not the last
           {"table_ms": 1.1, "measured_ms": 1.0, "measured_flags": ["retried"]},  # the last usable: 1.1 / 1.0
           {"table_ms": 1.3, "measured_ms": 1.0, "measured_flags": ["noisy"]},  # flagged: may not calibrate
           {"table_ms": 1.4}]  # not measured this epoch
    assert measured_table_target(log, 2.0) == pytest.approx(2.2)
    assert measured_table_target(log[2:], 2.0) is None and measured_table_target([], 2.0) is None


def test_landing_rounds_without_a_measurer_stop_at_the_table(torch_cell_table):
    import numpy as np

    from hwnas.search.cellsearch import land_measured

    space, table, _ = torch_cell_table
    start = space.sample(np.random.default_rng(0))
    landed, rounds = land_measured(space, start, _log_probs(start), table, 0.95 * table.predict(start), None, 1, 3)
    assert len(rounds) == 1 and rounds[0]["arch_hash"] == landed.hash and "measured_ms" not in rounds[0]


def test_landing_without_a_latency_target_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "--method", "snas", "--channels", "2", "--cells", "2", "--resolution", "8",
                       "--land", "--out", str(tmp_path / "r"))
    assert code == 2 and "landing (--land) needs the latency resource and a --target" in err and "Traceback" not in err
    code, _, err = cli(monkeypatch, capsys, "--method", "snas", *SMALL_CELL_ARGS, "--land-rounds", "0",
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "--land-rounds" in err
