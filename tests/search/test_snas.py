"""SNAS on the darts space: the concrete distribution, the costs and their gradients, the
temperature, the derivation, and a tiny real search with a resume."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.search.snas import (
    EDGES, PRIMITIVES, ResourceCost, SNASConfig, concrete_log_density, derive, edge_cost_tables,
    gumbel_softmax_sample, local_costs, search, total_cost,
)
from hwnas.spaces import get_space

NONE = PRIMITIVES.index("none")


@pytest.fixture
def space():
    return get_space("darts", channels=4, cells=3, num_classes=10, resolution=16)


def test_temperature_anneals_linearly_from_tau_to_tau_min():
    cfg = SNASConfig(resource="params", epochs=5, tau=1.0, tau_min=0.03)
    taus = [cfg.temperature(e) for e in range(5)]
    assert taus[0] == 1.0 and taus[-1] == pytest.approx(0.03)
    assert np.allclose(np.diff(taus), (0.03 - 1.0) / 4)
    exp = SNASConfig(resource="params", epochs=5, tau=1.0, tau_min=0.01, anneal="exp")
    assert exp.temperature(2) == pytest.approx(0.1)


def test_concrete_density_integrates_to_one_on_two_categories():
    """On 2 categories z = (s, 1 - s): integrate p over s by quadrature (the 1-D density is p(z)
    in the simplex coordinates)."""
    alpha, tau = torch.tensor([0.3, -0.5]), 0.7
    s = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    log_z = torch.log(torch.stack([s, 1 - s], -1))
    p = concrete_log_density(log_z, alpha.double(), tau).exp()
    assert float(torch.trapezoid(p, s)) == pytest.approx(1.0, abs=1e-3)


def test_score_function_is_unbiased_on_an_enumerable_toy():
    """f(z) = c[argmax z] has E f = softmax(alpha) . c (Gumbel-max), so its gradient is known
    exactly; the mean of f(z) * grad log p(z) over concrete samples must match it."""
    torch.manual_seed(0)
    alpha = torch.tensor([0.5, -0.2, 0.1, 1.0], requires_grad=True)
    c = torch.tensor([1.0, 3.0, -2.0, 0.5])
    n, tau = 200_000, 0.5
    z, log_z = gumbel_softmax_sample(alpha.detach().expand(n, 4), tau, torch.Generator().manual_seed(1))
    f = c[z.argmax(-1)]
    (concrete_log_density(log_z, alpha.expand(n, 4), tau) * f).mean().backward()
    p = torch.softmax(alpha.detach(), 0)
    exact = p * (c - (p * c).sum())
    # per-coordinate standard error of the estimate, from the samples themselves
    alpha2 = alpha.detach().clone().requires_grad_(True)
    per = torch.autograd.functional.jacobian(
        lambda a: concrete_log_density(log_z[:5000], a.expand(5000, 4), tau) * f[:5000], alpha2)
    se = per.std(0) / math.sqrt(n)
    assert torch.all((alpha.grad - exact).abs() < 5 * se + 1e-3), (alpha.grad, exact, se)


def test_local_costs_sum_to_the_total_and_have_the_right_gradients(space):
    tables = edge_cost_tables(space, "params")
    torch.manual_seed(0)
    alpha = {k: torch.randn(14, 8, requires_grad=True) for k in ("normal", "reduce")}
    z = {k: gumbel_softmax_sample(a, 0.5)[0] for k, a in alpha.items()}
    local = {k: v.detach() for k, v in local_costs(z, tables).items()}
    assert float(sum(v.sum() for v in local.values())) == pytest.approx(float(total_cost(z, tables).detach()))
    # none costs nothing; a sep conv costs its parameters summed over the cells of that kind
    assert float(tables["normal"][:, NONE].abs().sum()) == 0.0
    # discrete form: d/d alpha of sum_e softmax(alpha_e) . c_e = p (c - p . c), row by row
    p = {k: torch.softmax(a, -1) for k, a in alpha.items()}
    total_cost(p, tables).backward()
    for k in alpha:
        pk = p[k].detach().double()
        exact = pk * (tables[k] - (pk * tables[k]).sum(-1, keepdim=True))
        torch.testing.assert_close(alpha[k].grad.double(), exact, rtol=1e-4, atol=1e-9)
    # reparameterised form: d C / d z = c exactly
    zz = {k: v.detach().double().requires_grad_(True) for k, v in z.items()}
    total_cost(zz, tables).backward()
    for k in zz:
        torch.testing.assert_close(zz[k].grad, tables[k])


def test_the_cost_on_the_child_takes_its_value_and_the_relaxed_gradient(space):
    """--cost-on child: the term's value is the derived child's cost, its gradient the relaxed
    one's, so the penalty's side of the target is the child's."""
    from hwnas.latency.cells import one_hot

    torch.manual_seed(0)
    alpha = {k: torch.randn(14, 8) for k in ("normal", "reduce")}
    tables = edge_cost_tables(space, "flops")
    arch = space.validate(derive(alpha))
    child = space.costs(arch)["macs"] / 1e6  # the whole network: the edges and the parts Eq. 10 leaves out
    fixed = child - float(total_cost(one_hot(arch), tables))
    relaxed = float(total_cost({k: torch.softmax(a, -1) for k, a in alpha.items()}, tables)) + fixed
    assert fixed > 0 and abs(child - relaxed) > 0.05 * relaxed  # the two differ, else nothing is shown

    def grad(cost_on, target):
        a = {k: v.clone().requires_grad_(True) for k, v in alpha.items()}
        cost = ResourceCost(SNASConfig(resource="flops", target=target, gradient="discrete", cost_on=cost_on), space)
        term, value = cost.term(a, None, None, 1.0)
        term.backward()
        return value, torch.cat([a[k].grad.flatten() for k in a])

    value, g_child = grad("child", 0.5 * min(child, relaxed))  # both over the target: the same gradient
    assert value == pytest.approx(child)
    torch.testing.assert_close(g_child, grad("sample", 0.5 * min(child, relaxed))[1])
    between = (child + relaxed) / 2  # the child and the relaxed cost on either side: opposite gradients
    torch.testing.assert_close(grad("child", between)[1], -grad("sample", between)[1])
    with pytest.raises(HwnasError, match="score function"):
        SNASConfig(cost_on="child", gradient="score")


def test_edge_cost_table_matches_the_space_counts(space):
    """A child graph's params = fixed parts + the sum of its edges' table entries."""
    tables = edge_cost_tables(space, "params")
    a = space.sample(np.random.default_rng(0))
    b = space.validate({**a.to_json(), "normal_edges": [["none", "skip_connect"], ["none"] * 3, ["none"] * 4, ["none"] * 5],
                        "normal_concat": [2]})
    # the two differ in normal edges only where preprocessing and fixed parts are equal: compare edge sums
    from hwnas.latency.cells import one_hot

    edge_a = float(total_cost(one_hot(a), tables)) * 1e6
    fixed = space.params(a) - edge_a
    assert fixed > 0 and float(total_cost(one_hot(b), tables)) * 1e6 < edge_a


def test_derivation_argmax_keeps_none_and_top2_follows_darts():
    alpha = {k: torch.zeros(14, 8) for k in ("normal", "reduce")}
    a = alpha["normal"]
    for e, (j, i) in enumerate(EDGES):
        a[e, NONE] = 5.0  # every edge prefers none ...
    a[0, PRIMITIVES.index("sep_conv_3x3")] = 6.0  # ... but 0 -> node 2
    a[2, PRIMITIVES.index("skip_connect")] = 7.0  # and 0 -> node 3
    a[4, PRIMITIVES.index("max_pool_3x3")] = 4.0  # (loses to none under argmax)
    alpha["reduce"][:, PRIMITIVES.index("avg_pool_3x3")] = 1.0
    doc = derive(alpha, "argmax")
    assert doc["normal_edges"] == [["sep_conv_3x3", "none"], ["skip_connect", "none", "none"], ["none"] * 4, ["none"] * 5]
    assert all(op == "avg_pool_3x3" for row in doc["reduce_edges"] for op in row)
    top2 = derive(alpha, "top2")
    # node 3: edges 0 (skip 7) and 2 (max pool 4) are the two strongest non-none
    assert top2["normal_edges"][1] == ["skip_connect", "none", "max_pool_3x3"]
    assert all(sum(op != "none" for op in row) == 2 for row in top2["normal_edges"])


def test_all_none_cell_keeps_its_strongest_edge():
    alpha = {k: torch.zeros(14, 8) for k in ("normal", "reduce")}
    alpha["normal"][:, NONE] = 9.0
    alpha["normal"][1, PRIMITIVES.index("dil_conv_5x5")] = 3.0
    doc = derive(alpha)
    assert doc["normal_edges"][0] == ["none", "dil_conv_5x5"]


def test_unknown_cost_is_named():
    with pytest.raises(HwnasError, match="unknown cost 'latncy' for the darts space .*did you mean 'latency'"):
        SNASConfig(resource="latncy")


@pytest.mark.parametrize("gradient", ["score", "reparam", "discrete"])
def test_resource_term_moves_alpha_away_from_costly_ops(space, gradient):
    cfg = SNASConfig(resource="flops", gradient=gradient, lam=1.0)
    cost = ResourceCost(cfg, space)
    alpha = {k: torch.zeros(14, 8, requires_grad=True) for k in ("normal", "reduce")}
    gen = torch.Generator().manual_seed(0)
    grads = {k: torch.zeros(14, 8) for k in alpha}
    for _ in range(200 if gradient == "score" else 1):
        z, log_z = {}, {}
        for k, a in alpha.items():
            z[k], log_z[k] = gumbel_softmax_sample(a, 1.0, gen)
        term, value = cost.term(alpha, z, log_z, 1.0)
        g = torch.autograd.grad(term, list(alpha.values()))
        for k, gk in zip(alpha, g):
            grads[k] += gk
    sep5, skip = PRIMITIVES.index("sep_conv_5x5"), PRIMITIVES.index("skip_connect")
    # gradient descent lowers the costly op's logit and raises the free ones'
    assert float(grads["normal"][:, sep5].sum()) > float(grads["normal"][:, skip].sum())


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory, make_cell_table):
    """At C=2, 2 cells, 8 px on ort-cpu (ONNX parts)."""
    space, table, measurer = make_cell_table(tmp_path_factory.mktemp("snas"), "ort-cpu", channels=2, cells=2)
    yield space, table, measurer
    measurer.store.close()


def test_tiny_search_end_to_end_and_resume(tmp_path, digits, tiny_table):
    space, table, measurer = tiny_table
    target = 0.9 * table.predict(space.default_arch())
    cfg = SNASConfig(resource="latency", target=target, epochs=2, batch_size=32, measure_every=1, final_sessions=1)
    out = tmp_path / "run"
    assert search(cfg, space, digits, out, table=table, measurer=measurer, show_progress=False, stop_after_epoch=1) is None
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and {"train_loss", "val_acc_child", "edge_entropy", "arch", "params_m", "macs_m", "mac_m",
                              "table_ms", "measured_ms", "tau"} <= set(log[0])
    # written as a run from before --cost-on and --deploy-* existed: it resumes, on the defaults only
    config = json.loads((out / "config.json").read_text())
    assert config["cost_on"] == "sample" and config["deploy"] == space.config
    (out / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in ("cost_on", "deploy")}))
    with pytest.raises(HwnasError, match=r"different configuration \(cost_on differ\)"):
        search(replace(cfg, cost_on="child"), space, digits, out, table=table, measurer=measurer, show_progress=False)
    summary = search(cfg, space, digits, out, table=table, measurer=measurer, show_progress=False)
    assert summary["epochs"] == 2 and summary["measured_ms"] > 0
    assert summary["lookup_error_pct"] is not None
    final = space.validate(json.loads((out / "final_arch.json").read_text()))
    assert final.hash == summary["arch_hash"]
    # the resumed run equals one run straight through
    straight = search(cfg, space, digits, tmp_path / "straight", table=table, measurer=None, show_progress=False)
    assert straight["arch_hash"] == summary["arch_hash"]
    with pytest.raises(HwnasError, match="different configuration"):
        search(SNASConfig(resource="params", epochs=2), space, digits, out, show_progress=False)


def test_landing_after_the_search_measures_and_keeps_a_landed_child(tmp_path, digits, tiny_table):
    space, table, measurer = tiny_table
    target = 0.9 * table.predict(space.default_arch())
    cfg = SNASConfig(resource="latency", target=target, epochs=1, batch_size=32, final_sessions=1, land=True,
                     land_rounds=2, measure_every=1)
    summary = search(cfg, space, digits, tmp_path / "run", table=table, measurer=measurer, show_progress=False)
    rounds = summary["landing"]["rounds"]
    assert 1 <= len(rounds) <= 2 and all(r["measured_ms"] > 0 for r in rounds)
    # the first round aims where the search's one measurement puts the table, if usable (else at the target)
    (m,) = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    aim = target * m["table_ms"] / m["measured_ms"] if usable(m["measured_flags"]) else target
    assert rounds[0]["table_target_ms"] == pytest.approx(aim)
    assert summary["arch_hash"] in {r["arch_hash"] for r in rounds}
    assert 0 <= summary["landing"]["landed_val_acc"] <= 1 and 0 <= summary["landing"]["derived_val_acc"] <= 1
    assert summary["predicted_ms"] == pytest.approx(table.predict(space.validate(
        json.loads((tmp_path / "run" / "final_arch.json").read_text()))))
    # the report shows the rounds after the derived child's row, the kept one with the landed child's accuracy
    from hwnas.report.document import build

    items = {i.name: i for sec in build([tmp_path / "run"]).sections for i in sec.items if hasattr(i, "name")}
    shown = items["landing_run"].df
    assert list(shown["round"]) == [0] + [r["round"] for r in rounds]
    assert shown["measured_ms"].iloc[0] == m["measured_ms"] and shown["val_acc"].iloc[0] == summary["landing"]["derived_val_acc"]
    assert list(shown["kept"][1:]) == [bool(r.get("kept")) for r in rounds] and shown["kept"].sum() == 1
    assert shown.loc[shown["kept"], "val_acc"].item() == summary["landing"]["landed_val_acc"]
    target_row = items["target_precision"].df.iloc[0]
    assert target_row["flags"] == ",".join(summary["measured_flags"]) and target_row["ci_low_ms"] <= summary["measured_ms"]
    for bad in (dict(land=True), dict(land=True, resource="flops", target=1.0), dict(land_rounds=0)):
        with pytest.raises(HwnasError, match="land"):
            SNASConfig(**{"resource": "latency", **bad})


def test_a_flagged_landing_round_is_measured_again_and_then_ends_the_rounds(tmp_path, tiny_table):
    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.measure import Measurer
    from hwnas.search.cellsearch import land_measured
    from hwnas.store import Store

    space, table, _ = tiny_table
    # noisy_ci 0: every measurement over 2+ processes is flagged noisy, so none may calibrate
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0, processes=2, reference=False,
                               noisy_ci=0.0)
    measurer = Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), protocol, cache_dir=tmp_path)
    start = space.default_arch()
    alpha = {k: torch.zeros(14, 8) for k in ("normal", "reduce")}
    try:
        landed, rounds = land_measured(space, start, alpha, table, 0.9 * table.predict(start), measurer, 1, 3)
    finally:
        measurer.store.close()
    assert len(rounds) == 1 and "noisy" in rounds[0]["measured_flags"]
    assert rounds[0]["measured_processes"] == 4 and landed.hash == rounds[0]["arch_hash"] and rounds[0]["kept"]


@pytest.mark.parametrize("bilevel", [False, True])
def test_the_logged_cost_is_the_one_penalised_one_level_and_bilevel(tmp_path, digits, bilevel):
    space = get_space("darts", channels=2, cells=2, num_classes=10, resolution=8)
    # alpha all but frozen: the derived child stays the same all epoch, so its cost is every batch's
    cfg = SNASConfig(resource="params", target=0.001, cost_on="child", bilevel=bilevel, arch_lr=1e-9, epochs=1,
                     batch_size=32)
    search(cfg, space, digits, tmp_path / "run", show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    from hwnas.latency.cells import one_hot

    child = space.costs(log[0]["arch"])["params"] / 1e6  # the whole network's, not only its edges'
    assert child > float(ResourceCost(cfg, space).full(one_hot(space.validate(log[0]["arch"]))))
    assert log[0]["cost_value"] == pytest.approx(child, rel=1e-6)
    assert log[0]["cost_term"] > 0  # the child is over the target
