"""EnTranNAS(-DST): DST's coefficients and derivation on hand-made and random parameters, a
Transit-cell against the darts space's own cell, feature sharing by counting op calls, the
latency term at convergence, bad input, and a tiny real search with a resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.latency.cells import CellLatencyTable
from hwnas.search.entrannas import (
    CANDIDATES,
    EngineCell,
    EnTranNASConfig,
    EnTranNASNet,
    K,
    TransitCell,
    derive,
    derive_cell,
    dst_coefficients,
    expected_latency,
    node_edges,
    search,
    sparsity_regulariser,
)
from hwnas.spaces import get_space
from hwnas.spaces.darts import EDGES, N_EDGES, STEPS, Cell, edge_index

SEP3 = CANDIDATES.index("sep_conv_3x3")


def hand_made():
    """alpha [14, 7] and beta [4] of one cell kind, with a known outcome at tau = 1, t = sigmoid(beta):
    node 2: one strong op on edge 0->2 only; node 3: two equally strong edges (0 and 1), the third
    weak; node 4: beta high (t = 0.95), only the maximum survives; node 5: beta low (t = 0.047),
    every edge survives."""
    alpha = torch.zeros(N_EDGES, K)
    beta = torch.zeros(STEPS)
    alpha[edge_index(0, 0), SEP3] = 3.0
    alpha[edge_index(1, 0), 0] = 2.0
    alpha[edge_index(1, 1), 4] = 2.0
    alpha[edge_index(2, 3), 2] = 1.0
    beta[2] = 3.0
    alpha[edge_index(3, 4), 5] = 1.0
    beta[3] = -3.0
    return alpha, beta


def test_dst_on_hand_made_parameters():
    alpha, beta = hand_made()
    q_hat, q = dst_coefficients(alpha, beta, 1.0)
    ops = derive_cell(q_hat, "dst")
    graph = {j: [(i, ops[edge_index(j, i)]) for i in range(2 + j) if ops[edge_index(j, i)] != "none"] for j in range(STEPS)}
    assert graph[0] == [(0, "sep_conv_3x3")]
    assert graph[1] == [(0, CANDIDATES[0]), (1, CANDIDATES[4])]
    assert graph[2] == [(3, CANDIDATES[2])]
    assert len(graph[3]) == 5  # a low threshold keeps every edge
    # q_hat sums to 1 over every active edge, is 0 on the others; the derived set is the non-zero set
    for e in range(N_EDGES):
        active = bool((q_hat[e] > 0).any())
        assert active == (ops[e] != "none")
        assert float(q_hat[e].sum()) == pytest.approx(1.0 if active else 0.0)
        if active and int((q_hat[e] > 0).sum()) == 1:
            assert CANDIDATES[int(q_hat[e].argmax())] == ops[e]


def test_dst_gradients_reach_exactly_the_live_connections():
    alpha, beta = hand_made()
    alpha.requires_grad_(True)
    beta.requires_grad_(True)
    q_hat, q = dst_coefficients(alpha, beta, 1.0)
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.rand(N_EDGES, K, generator=gen), torch.rand(N_EDGES, K, generator=gen)
    ((w1 * q_hat).sum() + (w2 * q).sum()).backward()
    for e, (j, i) in enumerate(EDGES):
        live = bool((q[e] > 0).any())
        node_live = int((q[node_edges(j)] > 0).sum())
        # a pruned edge has no gradient (it is no part of the network); a live one has, unless it is
        # its node's only connection: that is the node's maximum, whose p_hat is 1 whatever alpha is
        assert (float(alpha.grad[e].abs().max()) > 1e-5) == (live and node_live > 1), e  # 1e-8: rounding
    assert node_live > 1 and int((q[node_edges(0)] > 0).sum()) == 1  # both cases occur
    assert bool((beta.grad != 0).all())  # every node keeps a connection whose q moves with t_j
    # Eq. 11's term pushes every threshold up
    b = torch.zeros(STEPS, requires_grad=True)
    net_like = type("N", (), {"betas": lambda self: {"normal": b}})()
    sparsity_regulariser(net_like).backward()
    assert bool((b.grad < 0).all())


@pytest.mark.parametrize("seed", range(5))
def test_dst_properties_on_random_parameters(seed):
    """Any alpha, beta (thresholds up to sigmoid(40), which float32 rounds to 1) and temperature:
    every node keeps an input, q_hat sums to 1 on live edges, the derived edges are the live ones."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(40):
        alpha = torch.randn(N_EDGES, K, generator=gen) * 5
        beta = torch.randn(STEPS, generator=gen) * 20
        tau = float(torch.rand(1, generator=gen)) + 0.01
        q_hat, _ = dst_coefficients(alpha, beta, tau)
        ops = derive_cell(q_hat, "dst")
        for j in range(STEPS):
            rows = node_edges(j)
            assert bool((q_hat[rows] > 0).any())
        live = (q_hat > 0).any(-1)
        assert [op != "none" for op in ops] == live.tolist()
        assert torch.allclose(q_hat[live].sum(-1), torch.ones(int(live.sum())))


def test_a_multi_op_edge_keeps_its_larger_op_in_child_graph_form():
    alpha = torch.zeros(N_EDGES, K)
    alpha[0, 1], alpha[0, 2] = 2.0, 1.9  # both far above t = 0.5 after Eq. 7
    q_hat, _ = dst_coefficients(alpha, torch.zeros(STEPS), 1.0)
    assert int((q_hat[0] > 0).sum()) > 1
    assert derive_cell(q_hat, "dst")[0] == CANDIDATES[1]


def test_top2_is_darts_rule():
    alpha = torch.zeros(N_EDGES, K)
    alpha[edge_index(3, 4), 3] = 2.0
    alpha[edge_index(3, 1), 5] = 1.0
    ops = derive_cell(torch.softmax(alpha, -1), "top2")
    for j in range(STEPS):
        assert sum(ops[e] != "none" for e in range(node_edges(j).start, node_edges(j).stop)) == 2
    assert ops[edge_index(3, 4)] == CANDIDATES[3] and ops[edge_index(3, 1)] == CANDIDATES[5]


def _randomize(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize("reduction,reduction_prev,seed", [(False, False, 0), (True, False, 1), (False, True, 2), (False, False, 3)])
def test_a_transit_cell_is_the_derived_cell_with_shared_weights(reduction, reduction_prev, seed):
    space = get_space("darts", channels=4, cells=3, num_classes=10, resolution=16)
    arch = space.sample(np.random.default_rng(seed))
    graph = arch.reduce if reduction else arch.normal
    c_pp, c_p, c = 12, 16, 4
    transit = TransitCell(c_pp, c_p, c, reduction, reduction_prev, bottleneck=1)
    _randomize(transit, seed)
    cell = Cell(graph, c_pp, c_p, c, reduction, reduction_prev)
    state = {}
    for name, part in (("pre0", cell.pre0), ("pre1", cell.pre1)):
        if part is not None:
            state.update({f"{name}.{k}": v for k, v in getattr(transit, name).state_dict().items()})
    for j in range(STEPS):
        for i, op in graph.inputs(j):  # one shared op of the Transit-cell fills every edge it feeds
            state.update({f"ops.{i}_{j + 2}.{k}": v for k, v in transit.ops[f"{i}_{op}"].state_dict().items()})
    cell.load_state_dict(state)
    h = 16
    gen = torch.Generator().manual_seed(seed)
    s0 = torch.randn(2, c_pp, 2 * h if reduction_prev else h, 2 * h if reduction_prev else h, generator=gen)
    s1 = torch.randn(2, c_p, h, h, generator=gen)
    for mode in ("eval", "train"):
        transit.train(mode == "train")
        cell.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(transit(s0, s1, graph), cell(s0, s1), rtol=1e-5, atol=1e-5)


def _count_calls(cell):
    calls = {}
    for name, op in cell.ops.items():
        op.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    return calls


@pytest.mark.parametrize("bottleneck", [1, 2])
def test_feature_sharing_computes_each_source_op_once(bottleneck):
    c = 4
    engine = EngineCell(12, 12, c, False, False, bottleneck)
    calls = _count_calls(engine)
    x = torch.randn(2, 12, 8, 8)
    engine(x, x, torch.softmax(torch.randn(N_EDGES, K), -1))
    # every (source, op) once although sources 0 and 1 feed 4 nodes: 5 sources x 7 ops
    assert len(engine.ops) == (STEPS + 1) * K and calls == {name: 1 for name in engine.ops}
    # with DST's zeros, a connection no node keeps is not computed at all
    calls.clear()
    q_hat, _ = dst_coefficients(*hand_made(), 1.0)
    engine(x, x, q_hat)
    kept = {f"{i}_{CANDIDATES[k]}" for e, (j, i) in enumerate(EDGES) for k in range(K) if q_hat[e, k] > 0}
    assert calls == {name: 1 for name in kept}
    # a Transit-cell: sep_conv_3x3 from state 0 feeds nodes 2, 3 and 5, computed once
    space = get_space("darts", channels=4, cells=3, num_classes=10, resolution=16)
    graph = space.validate({"normal_edges": [["sep_conv_3x3", "skip_connect"], ["sep_conv_3x3", "none", "max_pool_3x3"],
                                             ["none", "none", "none", "dil_conv_3x3"],
                                             ["sep_conv_3x3", "none", "none", "none", "avg_pool_3x3"]],
                            "reduce_edges": [["max_pool_3x3", "none"], ["none", "none", "skip_connect"],
                                             ["none"] * 3 + ["skip_connect"], ["none"] * 4 + ["skip_connect"]]}).normal
    transit = TransitCell(12, 12, c, False, False, bottleneck)
    calls = _count_calls(transit)
    out = transit(x, x, graph)
    assert out.shape == (2, STEPS * c, 8, 8)
    assert calls == {"0_sep_conv_3x3": 1, "1_skip_connect": 1, "2_max_pool_3x3": 1, "3_dil_conv_3x3": 1,
                     "4_avg_pool_3x3": 1}


def synthetic_table(space, seed=0):
    """Random positive entries: the latency term's arithmetic against the table's own sum."""
    probe = CellLatencyTable.__new__(CellLatencyTable)
    probe.space, probe.batch, probe.plan = space, 1, space.cell_plan()
    probe._producers = probe._producer_units()
    rng = np.random.default_rng(seed)
    return CellLatencyTable(space, 1, {k: float(rng.uniform(0.01, 1.0)) for k in probe.needed_keys()})


@pytest.mark.parametrize("dst", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_latency_term_at_convergence_is_the_derived_networks_table_latency(dst, seed):
    space = get_space("darts", channels=4, cells=4, num_classes=10, resolution=16)
    table = synthetic_table(space, seed)
    net = EnTranNASNet(space, (0, 1))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # converged: alpha 1 apart per edge (a random order), a small temperature
        for a in net.alphas().values():
            a.copy_(torch.stack([torch.randperm(K, generator=gen).float() for _ in range(N_EDGES)]))
        for b in net.betas().values():
            b.copy_(torch.randn(b.shape, generator=gen))
    coefs, qs = net.coefficients(0.01, dst)
    arch = space.validate(derive(coefs, "dst" if dst else "top2"))
    latency = expected_latency(table, net.op_probabilities(0.01), qs, arch)
    assert float(latency.detach()) == pytest.approx(table.predict(arch), rel=1e-5)
    # before convergence it is differentiable in the ops: a small step of alpha against its gradient
    # lowers it (the edges' liveness held; its straight-through gradient moves no value by itself)
    with torch.no_grad():
        for a in net.alphas().values():
            a.copy_(torch.randn(a.shape, generator=gen) * 0.3)
    coefs, qs = net.coefficients(1.0, dst)
    arch = space.validate(derive(coefs, "dst" if dst else "top2"))
    held = {k: q.detach() for k, q in qs.items()}
    before = expected_latency(table, net.op_probabilities(1.0), held, arch)
    alphas = list(net.alphas().values())
    grads = torch.autograd.grad(before, alphas)
    with torch.no_grad():
        for p, g in zip(alphas, grads):
            p -= 1e-3 * g / max(float(g.abs().max()), 1e-12)
    assert float(expected_latency(table, net.op_probabilities(1.0), held, arch).detach()) < float(before.detach())
    if dst:  # and the thresholds get the liveness's gradient: raising them prunes, which lowers latency
        beta_grads = torch.autograd.grad(expected_latency(table, net.op_probabilities(1.0), qs, arch),
                                         list(net.betas().values()))
        assert all(bool((g < 0).all()) for g in beta_grads)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dst_lambda=-0.1), "DST lambda must be >= 0"),
    (dict(lam=-1.0), "lambda must be >= 0"),
    (dict(dst=True, derive="top2"), "--derive top2 contradicts"),
    (dict(derive="dst"), "needs --dst"),
    (dict(bottleneck=0), "bottleneck ratio must be an integer >= 1"),
    (dict(engine_cells=(1, 1)), "twice"),
    (dict(engine_cells=()), "non-empty"),
])
def test_bad_config_is_one_line(kwargs, match):
    with pytest.raises(HwnasError, match=match):
        EnTranNASConfig(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(engine_cells=(0, 7)), "engine cell 7 is out of range: 5 cells are at positions 0..4"),
    (dict(engine_cells=(-1, 1)), "engine cell -1 is out of range"),
    (dict(engine_cells=(0, 2)), "no engine cell is a reduce cell"),
    (dict(bottleneck=3), "bottleneck ratio 3 does not divide cell 0's 8 channels"),
    (dict(bottleneck=8), "bottleneck ratio 8 does not divide"),  # 1 channel left: FactorizedReduce needs 2
])
def test_bad_config_for_the_space_is_one_line(kwargs, match):
    space = get_space("darts", channels=8, cells=5, num_classes=10, resolution=16)
    with pytest.raises(HwnasError, match=match):
        EnTranNASConfig(**kwargs).check_space(space)


def test_default_engine_cells_are_the_first_normal_and_reduction_cells():
    assert EnTranNASConfig().engines(get_space("darts", channels=8, cells=8)) == (0, 2)
    assert EnTranNASConfig().engines(get_space("darts", channels=8, cells=3)) == (0, 1)


@pytest.mark.parametrize("dst", [True, False])
def test_tiny_search_end_to_end_and_resume(tmp_path, digits, torch_cell_table, dst):
    space, table, measurer = torch_cell_table
    target = 0.9 * table.predict(space.default_arch())
    # without DST: calibrated on the measurements; with DST: not, so that a run without a measurer
    # (below) must take the same steps
    cfg = EnTranNASConfig(dst=dst, target=target, epochs=2, batch_size=32, measure_every=1, final_sessions=1,
                          bottleneck=2 if dst else 1, calibrate=not dst)
    out = tmp_path / "run"
    assert search(cfg, space, digits, out, table=table, measurer=measurer, show_progress=False, stop_after_epoch=1) is None
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and {"train_loss", "val_acc_supernet", "val_acc_derived", "in_degrees", "arch", "table_ms",
                              "expected_ms", "measured_ms", "tau"} <= set(log[0])
    assert ("thresholds" in log[0]) == dst
    # calibration: the table's target is the target times the derived network's table / measured latency
    if not dst and "noisy" not in log[0]["measured_flags"] and "disturbed" not in log[0]["measured_flags"]:
        assert log[0]["table_target_ms"] == pytest.approx(target * log[0]["table_ms"] / log[0]["measured_ms"])
    assert not (dst and "table_target_ms" in log[0])
    summary = search(cfg, space, digits, out, table=table, measurer=measurer, show_progress=False)
    assert summary["method"] == ("entrannas-dst" if dst else "entrannas")
    assert summary["epochs"] == 2 and summary["measured_ms"] > 0 and summary["lookup_error_pct"] is not None
    assert summary["engine_cells"] == [0, 1]
    final = space.validate(json.loads((out / "final_arch.json").read_text()))
    assert final.hash == summary["arch_hash"]
    assert all(d >= 1 for degrees in summary["in_degrees"].values() for d in degrees)
    if not dst:
        assert summary["in_degrees"] == {"normal": [2] * STEPS, "reduce": [2] * STEPS}
    if dst:  # the resumed run equals one run straight through
        straight = search(cfg, space, digits, tmp_path / "straight", table=table, measurer=None, show_progress=False)
        assert straight["arch_hash"] == summary["arch_hash"]
    with pytest.raises(HwnasError, match="different configuration"):
        search(EnTranNASConfig(dst=dst, epochs=3), space, digits, out, table=table, show_progress=False)


def test_landing_after_the_search_keeps_the_derived_topology(tmp_path, digits, torch_cell_table):
    space, table, measurer = torch_cell_table
    target = 0.8 * table.predict(space.default_arch())
    cfg = EnTranNASConfig(dst=True, target=target, epochs=1, batch_size=32, final_sessions=1, land=True, land_rounds=2,
                          measure_every=1)
    summary = search(cfg, space, digits, tmp_path / "run", table=table, measurer=measurer, show_progress=False)
    landing = summary["landing"]
    assert 1 <= len(landing["rounds"]) <= 2 and all(r["measured_ms"] > 0 for r in landing["rounds"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    # the first round aims where the search's one measurement puts the table, if usable (else at the target)
    m = log[-1]
    aim = target * m["table_ms"] / m["measured_ms"] if usable(m["measured_flags"]) else target
    assert landing["rounds"][0]["table_target_ms"] == pytest.approx(aim)
    assert summary["arch_hash"] in {r["arch_hash"] for r in landing["rounds"]}
    assert 0 <= landing["landed_val_acc"] <= 1 and 0 <= landing["derived_val_acc"] <= 1
    derived = space.validate(json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["arch"])
    landed = space.validate(json.loads((tmp_path / "run" / "final_arch.json").read_text()))
    assert derived.hash == landing["derived_arch_hash"]
    for kind in ("normal", "reduce"):  # DST's in-degrees stay: only the live edges' ops change
        assert [op == "none" for op in landed.cell(kind).edges] == [op == "none" for op in derived.cell(kind).edges]
    with pytest.raises(HwnasError, match="landing .* needs a --target"):
        EnTranNASConfig(land=True)
    with pytest.raises(HwnasError, match="land rounds"):
        EnTranNASConfig(land_rounds=0)


@pytest.mark.parametrize("args,message", [
    (["--engine-cells", "0,9"], "engine cell 9 is out of range: 5 cells are at positions 0..4"),
    (["--dst", "--dst-lambda", "-0.5"], "the DST lambda must be >= 0, got -0.5"),
    (["--lambda", "-1"], "lambda must be >= 0"),
    (["--bottleneck", "3"], "bottleneck ratio 3 does not divide cell 0's 8 channels"),
    (["--dst", "--derive", "top2"], "--derive top2 contradicts it"),
    (["--engine-cells", "zero"], "expected comma-separated cell positions"),
])
def test_cli_bad_input_is_one_line_and_exit_2_before_any_work(capsys, tmp_path, args, message):
    from hwnas.cli.main import main

    out = tmp_path / "run"
    code = main(["search", "--method", "entrannas", "--target", "1", "--out", str(out), "--limit", "50", *args])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()  # nothing built, trained or written
