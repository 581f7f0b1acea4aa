"""TF-NAS search: elasticity-scaling on a synthetic table, a tiny end-to-end search with real
measurements, resume == uninterrupted, and bad inputs."""

import json
import math
import statistics

import numpy as np
import pytest
import torch

from hwnas.backends import get_backend
from hwnas.cli import main as cli_main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.measure import Measurer
from hwnas.search.rundir import RunDir
from hwnas.search.tfnas import TFNASConfig, search
from hwnas.spaces.elastic import elasticity_scale, scale_widths
from hwnas.spaces.mbconv import Space, distinct_layers
from hwnas.store import Store
from hwnas.surrogates.base import soft_latency


class SyntheticTable:
    """A differentiable latency model: base + per (stage, layer, op) a + b * mid, b > 0.

    Ops differ little (a few %), so one target is reachable by width for any choice of ops."""

    name = "synthetic"

    def __init__(self, space: Space, seed: int = 0, base_ms: float = 1.0):
        rng = np.random.default_rng(seed)
        self.space, self.base_ms, self.coef = space, base_ms, {}
        for i, shape in enumerate(space.stages):
            for j in range(shape.max_depth):
                c_in = space.layer_c_in(i, j)
                for op in space.op_names(i, j):
                    default = space.default_choice(op, c_in).mid or 1  # skip has mid 0
                    self.coef[i, j, op] = (rng.uniform(0.1, 0.15), rng.uniform(0.9, 1.1) / default)

    def layer_ms(self, i, j, op, mid):
        a, b = self.coef[i, j, op]
        return a + b * mid

    def predict(self, arch):
        arch = self.space.validate(arch)
        return self.base_ms + sum(self.layer_ms(i, j, c.op, c.mid) for i, s in enumerate(arch.stages) for j, c in enumerate(s))

    def soft(self, op_weights, depth_weights, mids=None):
        return soft_latency(self.space, self.base_ms, self.layer_ms, op_weights, depth_weights, mids)


@pytest.fixture
def deploy():
    return Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, limit=120)


def _extremes(space, arch):
    return scale_widths(space, arch, 0, 1e-3), scale_widths(space, arch, 0, 1e3)


# --- elasticity-scaling ------------------------------------------------------------------------------


def test_elasticity_scaling_meets_target_with_the_largest_gamma(deploy):
    model = SyntheticTable(deploy, seed=1)
    for k, arch in enumerate(deploy.random_archs(4, seed=5)):
        lo_arch, hi_arch = _extremes(deploy, arch)
        lo, hi = model.predict(lo_arch), model.predict(hi_arch)
        target = lo + (0.3 + 0.15 * k) * (hi - lo)
        r = elasticity_scale(model, arch, target)
        assert r.bound is None and r.message == ""
        assert r.latency_ms <= target
        assert (target - r.latency_ms) / target < 0.01  # within 1% below the target
        assert len(r.gammas) == len(deploy.stages)
        # Replay Algorithm 1: each step's gamma fits, and a slightly larger one does not
        # (unless every width of that step is already at its upper bound).
        current = deploy.validate(arch)
        for s, g in enumerate(r.gammas):
            nxt = scale_widths(deploy, current, s, g)
            assert model.predict(nxt) <= target
            bigger = scale_widths(deploy, current, s, g * (1 + 1e-4))
            if bigger != scale_widths(deploy, current, s, 1e3):
                assert model.predict(bigger) > target or bigger == nxt
            current = nxt
        assert current == r.arch
        # Brute force over the global step: no gamma on a fine grid fits beyond the one found.
        grid = np.linspace(0.2, 3.0, 4001)
        fitting = [g for g in grid if model.predict(scale_widths(deploy, deploy.validate(arch), 0, g)) <= target]
        assert max(fitting) <= r.gammas[0] * (1 + 1e-5)
        assert max(fitting) >= r.gammas[0] - (grid[1] - grid[0])


def test_elasticity_scaling_keeps_widths_on_the_alignment(deploy):
    model = SyntheticTable(deploy, seed=4)
    arch = deploy.random_archs(1, seed=7)[0]
    lo_arch, hi_arch = _extremes(deploy, arch)
    target = 0.5 * (model.predict(lo_arch) + model.predict(hi_arch))
    r = elasticity_scale(model, arch, target, align=4)
    assert r.bound is None and r.latency_ms <= target and (target - r.latency_ms) / target < 0.01
    for i, stage in enumerate(r.arch.stages):
        for j, c in enumerate(stage):
            lo, hi = deploy.width_range(c.op, deploy.layer_c_in(i, j))
            assert c.mid % 4 == 0 or c.mid in (lo, hi)
    # Replay on the aligned widths: no step could take one more width step without passing the
    # target (the next gamma that changes any width overshoots), so landing under a target by a
    # whole width step is the step's granularity, not a gamma left short
    current = deploy.validate(arch)
    for s, g in enumerate(r.gammas):
        nxt = scale_widths(deploy, current, s, g, align=4)
        assert model.predict(nxt) <= target
        top = scale_widths(deploy, current, s, 1e3, align=4)
        wider = next((w for w in (scale_widths(deploy, current, s, g * (1 + k * 1e-4), align=4) for k in range(1, 20001))
                      if w != nxt), top)
        if nxt != top:
            assert model.predict(wider) > target
        current = nxt
    assert current == r.arch


def test_elasticity_scaling_reports_the_width_bound(deploy):
    model = SyntheticTable(deploy, seed=2)
    arch = deploy.random_archs(1, seed=0)[0]
    lo_arch, hi_arch = _extremes(deploy, arch)
    r = elasticity_scale(model, arch, 0.5 * model.predict(lo_arch))
    assert r.bound == "min" and "bound" in r.message and r.arch == lo_arch
    assert r.latency_ms > 0.5 * model.predict(lo_arch)
    for i, stage in enumerate(r.arch.stages):  # every width at e_min * C_in
        for j, c in enumerate(stage):
            assert c.mid == deploy.width_range(c.op, deploy.layer_c_in(i, j))[0]
    r = elasticity_scale(model, arch, 2 * model.predict(hi_arch))
    assert r.bound == "max" and r.arch == hi_arch and "under the target" in r.message


def _shallow_and_full(space, seed):
    """An architecture at every stage's minimum depth, and the same ops at maximum depth
    (default widths)."""
    rng = np.random.default_rng(seed)
    ops = [[str(rng.choice(space.op_names(i, j))) for j in range(shape.max_depth)] for i, shape in enumerate(space.stages)]

    def at(depths):
        return space.validate({"space": space.name, "width_mult": space.width_mult,
                               "stages": [{"layers": o[:d]} for o, d in zip(ops, depths)]})

    return at([s.min_depth for s in space.stages]), at([s.max_depth for s in space.stages])


def test_elastic_depth_reaches_a_target_the_width_bound_stops(deploy):
    model = SyntheticTable(deploy, seed=3)
    shallow, full = _shallow_and_full(deploy, seed=1)
    target = 0.5 * (model.predict(_extremes(deploy, shallow)[1]) + model.predict(_extremes(deploy, full)[1]))
    # Widths only (the paper): stuck at the maximum widths, under the target.
    assert elasticity_scale(model, shallow, target).bound == "max"
    # Depth preferences: stage 3 (index 2) most wants to be deeper, then stage 5.
    probs = [[1.0 / (s.max_depth - s.min_depth + 1)] * (s.max_depth - s.min_depth + 1) for s in deploy.stages]
    probs[2] = [0.1, 0.1, 0.1, 0.7]
    probs[4] = [0.2, 0.2, 0.2, 0.4]
    r = elasticity_scale(model, shallow, target, full=full, depth_probs=probs)
    assert r.bound is None and r.latency_ms <= target and (target - r.latency_ms) / target < 0.01
    assert r.depth_changes and r.depth_changes[0] == "stage 3 depth 1 -> 2"
    assert r.arch.depths[2] > 1
    for i, stage in enumerate(r.arch.stages):  # layers come from `full`, in order
        assert [c.op for c in stage] == [c.op for c in full.stages[i][:len(stage)]]
    # And down: a target below the minimum widths of the full network removes layers.
    low = 0.5 * (model.predict(_extremes(deploy, shallow)[0]) + model.predict(_extremes(deploy, full)[0]))
    r = elasticity_scale(model, full, low, full=full, depth_probs=probs)
    assert r.bound is None and r.latency_ms <= low and (low - r.latency_ms) / low < 0.01
    assert sum(r.arch.depths) < sum(full.depths)
    # An impossible target still says so, after trying every depth.
    r = elasticity_scale(model, shallow, 10 * target, full=full, depth_probs=probs)
    assert r.bound == "max" and r.arch.depths == full.depths and "depth" in r.message


# --- search ------------------------------------------------------------------------------------------


def _shallow(space):
    """Every stage at its minimum depth: where a short search's derived architecture starts."""
    arch = space.default_arch().to_json()
    for stage, shape in zip(arch["stages"], space.stages):
        stage["layers"] = stage["layers"][: shape.min_depth]
        stage["depth"] = shape.min_depth
    return space.validate(arch)


def _target(model, space):
    arch = _shallow(space)
    lo_arch, hi_arch = _extremes(space, arch)
    return round(0.5 * (model.predict(lo_arch) + model.predict(hi_arch)), 3)


def test_tiny_search_end_to_end_with_real_measurements(deploy, digits, tmp_path, fast_protocol):
    model = SyntheticTable(deploy)
    target = _target(model, deploy)
    measurer = Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), fast_protocol)
    # lam: with a supernet that learns, cross-entropy may favour deeper stages within these few
    # steps; a dominant latency cost keeps the derived depths at the minimum, where `target` is reachable.
    cfg = TFNASConfig(target_ms=target, epochs=2, warmup_epochs=1, batch_size=32, train_resolution=16, measure_every=2,
                      lam=5.0)
    summary = search(cfg, digits, model, tmp_path / "run", measurer=measurer, show_progress=False)
    run = RunDir(tmp_path / "run")
    log = run.read_log()
    assert [r["epoch"] for r in log] == [1, 2]
    assert not log[0]["arch_updates"] and log[1]["arch_updates"]
    for key in ("train_loss", "train_loss_random", "train_acc", "val_loss", "val_acc", "alpha_entropy", "beta_entropy",
                "soft_latency_ms", "predicted_ms", "gammas", "arch", "measured_ms", "tau"):
        assert key in log[1], key
    assert "measured_ms" not in log[0] and log[1]["measured_ms"] > 0
    assert 0 < log[1]["alpha_entropy"] <= math.log(8) + 1e-6
    final = deploy.validate(json.loads((tmp_path / "run" / "final_arch.json").read_text()))
    assert final.to_json() == log[1]["arch"]
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["predicted_ms"] == pytest.approx(model.predict(final))
    assert summary["predicted_ms"] <= target and abs(summary["distance_to_target_pct"]) < 1.0
    # the final architecture, measured at epoch 2, is measured again in three fresh sessions
    sessions = summary["measured_sessions_ms"]
    assert len(sessions) == 3 and len(set(sessions)) == 3 and log[1]["measured_ms"] not in sessions
    assert summary["measured_ms"] == statistics.median(sessions)
    assert summary["lookup_error_pct"] == pytest.approx(100 * (summary["predicted_ms"] / summary["measured_ms"] - 1))
    assert summary["train_resolution"] == 16 and summary["deploy_resolution"] == 32
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["target_ms"] == target and config["train_space"]["resolution"] == 16
    assert config["deploy_space"]["resolution"] == 32 and config["latency_model"] == "synthetic"


def test_resume_gives_the_same_result_as_an_uninterrupted_run(deploy, digits, tmp_path):
    model = SyntheticTable(deploy)
    cfg = TFNASConfig(target_ms=_target(model, deploy), epochs=3, warmup_epochs=1, batch_size=32, train_resolution=16)
    whole = search(cfg, digits, model, tmp_path / "whole", show_progress=False)
    assert search(cfg, digits, model, tmp_path / "cut", show_progress=False, stop_after_epoch=2) is None
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert [r["epoch"] for r in RunDir(tmp_path / "cut").read_log()] == [1, 2]
    resumed = search(cfg, digits, model, tmp_path / "cut", show_progress=False)
    assert resumed == whole

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(RunDir(tmp_path / "cut").read_log()) == strip(RunDir(tmp_path / "whole").read_log())
    a = RunDir(tmp_path / "whole").load_checkpoint()
    b = RunDir(tmp_path / "cut").load_checkpoint()
    for name, t in a["supernet"].items():
        assert torch.equal(t, b["supernet"][name]), name
    # A finished run resumes to the same summary without training again.
    assert search(cfg, digits, model, tmp_path / "whole", show_progress=False) == whole


def test_a_finished_run_keeps_the_depth_elasticity_scaling_gave_it(deploy, digits, tmp_path):
    model = SyntheticTable(deploy)
    _, widest_shallow = _extremes(deploy, _shallow(deploy))
    # beyond the shallow network's widest: elasticity-scaling adds layers the supernet's beta does not hold
    cfg = TFNASConfig(target_ms=round(1.3 * model.predict(widest_shallow), 3), epochs=2, warmup_epochs=1,
                      batch_size=32, train_resolution=16)
    first = search(cfg, digits, model, tmp_path / "run", show_progress=False)
    assert RunDir(tmp_path / "run").read_log()[-1]["depth_changes"]
    again = search(cfg, digits, model, tmp_path / "run", show_progress=False)
    assert again == first


def test_bad_search_inputs(deploy, digits, tmp_path):
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(HwnasError, match="target latency"):
            TFNASConfig(target_ms=bad)
    with pytest.raises(HwnasError, match="warm-up"):
        TFNASConfig(target_ms=5, epochs=3, warmup_epochs=3)
    with pytest.raises(HwnasError, match="unknown latency cost"):
        TFNASConfig(target_ms=5, cost="square")
    with pytest.raises(HwnasError, match="share_ops"):
        TFNASConfig(target_ms=5, share_ops="yes")
    other = Space("tfnas", resolution=32, width_mult=0.25, num_classes=100)
    with pytest.raises(HwnasError, match="classes"):
        search(TFNASConfig(target_ms=5, epochs=1, warmup_epochs=0), digits, SyntheticTable(other), tmp_path / "r")
    with pytest.raises(HwnasError, match="elastic"):
        search(TFNASConfig(target_ms=5, epochs=1, warmup_epochs=0), digits,
               SyntheticTable(Space("proxyless", 32, 0.25, 10)), tmp_path / "p")
    model = SyntheticTable(deploy)
    cfg = TFNASConfig(target_ms=_target(model, deploy), epochs=2, warmup_epochs=1, batch_size=32, train_resolution=16)
    search(cfg, digits, model, tmp_path / "run", show_progress=False, stop_after_epoch=1)
    with pytest.raises(HwnasError, match="different configuration"):
        search(TFNASConfig(**{**cfg.__dict__, "lam": 0.2}), digits, model, tmp_path / "run", show_progress=False)
    with pytest.raises(HwnasError, match="different configuration"):  # a resumed run keeps its supernet kind
        search(TFNASConfig(**{**cfg.__dict__, "share_ops": False}), digits, model, tmp_path / "run", show_progress=False)


# --- CLI ---------------------------------------------------------------------------------------------


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    code = cli_main.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_rejects_bad_inputs_in_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = _cli(monkeypatch, capsys, "search", "--method", "tfnass", "--target", "5", "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip().count("\n") == 0 and "unknown search method 'tfnass'" in err and "tfnas" in err
    code, _, err = _cli(monkeypatch, capsys, "search", "--target", "0", "--out", str(tmp_path / "r"))
    assert code == 2 and "'--target': must be in (0, 1e+06], got 0.0" in err
    code, _, err = _cli(monkeypatch, capsys, "search", "--target", "5", "--data", f"folder:{tmp_path}/missing",
                        "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip().count("\n") == 0 and "missing" in err


def test_cli_search_with_a_lookup_table_file(monkeypatch, capsys, tmp_path, deploy):
    """A real LookupTable (synthetic entries) loaded with --lut; the final architecture measured on ort-cpu."""
    from hwnas.surrogates.lut import LookupTable, entry_key

    points = {}
    for spec in distinct_layers(deploy, 1, 1):  # every width: aligned and unaligned curves
        ms = 0.02 + 1e-3 * spec.mid if spec.part == "searchable" else 0.05
        points.setdefault(entry_key(spec), {})[spec.mid] = ms
    entries = {k: (sorted(p), [p[m] for m in sorted(p)]) for k, p in points.items()}
    lut = LookupTable(deploy, 1, "ort-cpu", get_backend("ort-cpu").fingerprint(1), {}, 16, entries)
    lut.save(tmp_path / "lut.json")
    target = _target(lut, deploy)
    args = ["search", "--target", str(target), "--out", str(tmp_path / "run"), "--limit", "100", "--width-mult", "0.25",
            "--resolution", "32", "--train-resolution", "16", "--lut", str(tmp_path / "lut.json"), "--epochs", "2",
            "--warmup-epochs", "1", "--batch-size", "32", "--warmup", "1", "--min-runs", "5", "--min-time", "0",
            "--db", str(tmp_path / "m.sqlite")]
    code, out, err = _cli(monkeypatch, capsys, *args)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["target_ms"] == target and summary["measured_ms"] > 0
    # Ops of different expansion have disjoint width ranges in this table, so the target may be
    # out of a derived architecture's reach: then the bound is reported; otherwise it is met.
    if summary["width_bound"] is None:
        assert summary["predicted_ms"] <= target and abs(summary["distance_to_target_pct"]) < 1.0
    else:
        assert summary["width_bound_note"] and (summary["predicted_ms"] > target) == (summary["width_bound"] == "min")
    assert summary["predicted_ms"] == pytest.approx(lut.predict(json.loads((tmp_path / "run" / "final_arch.json").read_text())))
    assert "measured" in err and "final_arch.json" in err
    # Wrong table for the deployment resolution: one line.
    code, _, err = _cli(monkeypatch, capsys, *[a if a != "32" else "64" for a in args[:-2]], "--out", str(tmp_path / "r2"))
    assert code == 2 and "another space" in err
