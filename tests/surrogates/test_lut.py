import json

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import Arch, LayerChoice, Space, width_grid
from hwnas.surrogates.base import one_hot_weights
from hwnas.surrogates.lut import LookupTable, entry_key, layer_spec, overhead_item


def _measured(lab, spec) -> float:
    m = lab.measurer.layer(spec)
    assert m.cached, f"the table build should have measured {spec}"
    return m.measurement.stats["median_ms"]


def _hand_ms(lab, spec) -> float:
    """A layer's ms from the store's measurements, interpolated by hand between the measured
    widths of its class: multiples of 4, or not (g + 1 beside each grid width g, and hi - 1)."""
    if spec.part != "searchable":
        return _measured(lab, spec)
    grid = sorted({m for op in lab.space.ops for m in _op_grid(lab, spec, op)})
    if spec.mid % 4 == 0:
        points = grid
    else:
        points = sorted({g + 1 for g in grid[:-1]} | {grid[-1] - 1})
        points = [p for p in points if p % 4]
    lo = max(g for g in points if g <= spec.mid)
    hi = min(g for g in points if g >= spec.mid)
    t_lo = _measured(lab, _with_mid(spec, lo))
    if lo == hi:
        return t_lo
    t_hi = _measured(lab, _with_mid(spec, hi))
    return t_lo + (spec.mid - lo) / (hi - lo) * (t_hi - t_lo)


def _op_grid(lab, spec, op):
    """The grid widths of `op` where `op` at this layer is the same layer as `spec` but for its width."""
    o = lab.space.ops[op]
    if o.kernel != spec.kernel or o.se_ratio * spec.c_in != spec.se:
        return []
    return width_grid(*lab.space.width_range(op, spec.c_in), lab.lut.width_step)


def _with_mid(spec, mid):
    from dataclasses import replace

    return replace(spec, mid=mid)


def _grid_arch(space: Space) -> Arch:
    """Full depth, every layer at the low end of its op's width range: all widths on the grid."""
    stages = []
    for i, s in enumerate(space.stages):
        layers = []
        for j in range(s.max_depth):
            op = space.op_names(i, j)[(i + j) % 8]
            lo, _ = space.width_range(op, space.layer_c_in(i, j))
            layers.append(LayerChoice(op, lo, space.default_choice(op, space.layer_c_in(i, j)).se))
        stages.append(tuple(layers))
    return Arch(space.name, space.width_mult, tuple(stages))


def _overhead(lab) -> float:
    m = lab.measurer.measure(overhead_item(lab.measurer, 1))
    assert m.cached, "the table build should have measured the empty model"
    return m.measurement.stats["median_ms"]


def _network_ms(lab, parts_ms) -> float:
    """Each part less one model's overhead (never below 0), and the overhead once."""
    o = min(_overhead(lab), min(float(ms.min()) for _, ms in lab.lut.entries.values()))
    return o + sum(max(t - o, 0.0) for t in parts_ms)


def test_the_overhead_is_an_empty_model_measured_with_the_table(lab):
    lowest = min(float(ms.min()) for _, ms in lab.lut.entries.values())
    # the empty model, capped at the cheapest part (each part carries one overhead; a reading
    # above the cheapest part was disturbed)
    assert lab.lut.overhead_ms == min(_overhead(lab), lowest) > 0


def test_sum_equals_hand_computed_sum_at_grid_widths(lab):
    arch = _grid_arch(lab.space)
    hand = _network_ms(lab, [_measured(lab, spec) for spec in lab.space.layers(arch)])
    assert lab.lut.predict(arch) == pytest.approx(hand, rel=1e-12)


def test_sum_equals_hand_interpolated_sum_on_random_subnets(lab):
    for arch in lab.space.random_archs(5, seed=3):
        hand = _network_ms(lab, [_hand_ms(lab, spec) for spec in lab.space.layers(arch)])
        assert lab.lut.predict(arch) == pytest.approx(hand, rel=1e-12)


def test_base_is_stem_fixed_block_and_head(lab):
    s = lab.space
    head = s.layers(s.default_arch())[-1]
    assert lab.lut.base_ms == pytest.approx(_network_ms(lab, [_measured(lab, s.stem()), _measured(lab, s.fixed_block()),
                                                              _measured(lab, head)]))


def test_a_table_without_an_overhead_reads_as_before(lab):
    doc = lab.lut.to_json()
    del doc["overhead_ms"]  # written before the overhead was measured
    old = LookupTable.from_json(doc)
    arch = lab.space.random_archs(1, seed=5)[0]
    assert old.overhead_ms == 0.0
    assert old.predict(arch) == pytest.approx(sum(_hand_ms(lab, spec) for spec in lab.space.layers(arch)), rel=1e-12)
    assert old.predict(arch) > lab.lut.predict(arch)  # it counts the overhead once per part


def test_interpolation_is_exact_at_grid_points_and_linear_between(lab):
    spec = layer_spec(lab.space, 2, 1, "k5_e6_se", 96)  # C_in 24: widths 96..192, grid 96, 128, 192
    mids, ms = lab.lut.entries[entry_key(spec)]
    assert [int(m) for m in mids] == [96, 97, 128, 129, 191, 192]  # beside each grid width an unaligned one
    for m, t in zip(mids, ms):
        assert lab.lut.raw_layer_ms(_with_mid(spec, int(m))) == t  # exact, not approximately
        assert lab.lut.layer_ms(_with_mid(spec, int(m))) == max(t - lab.lut.overhead_ms, 0.0)
        assert t == _measured(lab, _with_mid(spec, int(m)))
    t = dict(zip(mids.astype(int).tolist(), ms))
    for mid in range(96, 129, 4):  # multiples of 4: on the line between 96 and 128
        expected = t[96] + (mid - 96) / 32 * (t[128] - t[96])
        assert lab.lut.raw_layer_ms(_with_mid(spec, mid)) == pytest.approx(expected, rel=1e-12)
    for mid in (98, 99, 101, 127):  # the others: on the line between 97 and 129
        expected = t[97] + (mid - 97) / 32 * (t[129] - t[97])
        assert lab.lut.raw_layer_ms(_with_mid(spec, mid)) == pytest.approx(expected, rel=1e-12)


def test_missing_entries_are_errors_never_zero(lab):
    spec = layer_spec(lab.space, 0, 0, "k3_e6", 48)
    with pytest.raises(HwnasError, match=r"holds no mbinvres layer at stage3.layer1 \(c_in=999"):
        lab.lut.layer_ms(_with_mid(spec, 48).__class__(**{**spec.key(), "c_in": 999}, position="stage3.layer1"))
    # k3_e3 and k3_e6 share a key (they differ only in mid), so one entry spans 2 C_in .. 8 C_in
    with pytest.raises(HwnasError, match="widths that are not multiples of 4 in 17..63 only, not mbinvres layer at "
                                         "stage3.layer1 .*mid=65"):
        lab.lut.layer_ms(_with_mid(spec, 65))
    with pytest.raises(HwnasError, match="widths that are multiples of 4 in 16..64 only, .*mid=68"):
        lab.lut.layer_ms(_with_mid(spec, 68))
    assert lab.lut.op_ms(1, 1, "skip", 0) == 0.0  # the identity costs nothing


def test_rebuild_measures_nothing(lab):
    before = len(lab.measurer.store)
    again = LookupTable.build(lab.space, lab.measurer, width_step=lab.lut.width_step, show_progress=False)
    assert len(lab.measurer.store) == before
    assert again.to_json() == lab.lut.to_json()


def test_soft_equals_predict_at_one_hot_weights_with_gradients(lab):
    for arch in lab.space.random_archs(3, seed=7):
        op_w, depth_w, mids = one_hot_weights(lab.space, arch)
        for stage in op_w:
            for w in stage:
                w.requires_grad_(True)
        for d in depth_w:
            d.requires_grad_(True)
        soft = lab.lut.soft(op_w, depth_w, mids)
        assert soft.item() == pytest.approx(lab.lut.predict(arch), rel=1e-5)
        soft.backward()
        assert all(torch.isfinite(w.grad).all() for stage in op_w for w in stage)
        assert sum(float(w.grad.abs().sum()) for stage in op_w for w in stage) > 0
        assert sum(float(d.grad.abs().sum()) for d in depth_w) > 0


def test_save_load_round_trip(lab, tmp_path):
    path = tmp_path / "lut.json"
    lab.lut.save(path)
    back = LookupTable.load(path, expect_space=lab.space, expect_backend="ort-cpu", expect_batch=1,
                            expect_fingerprint=lab.measurer.backend.fingerprint(1))
    for arch in lab.space.random_archs(5, seed=1):
        assert back.predict(arch) == lab.lut.predict(arch)
    assert back.width_step == lab.lut.width_step and back.fingerprint == lab.lut.fingerprint


def test_load_refuses_other_configurations_and_bad_files(lab, tmp_path):
    path = tmp_path / "lut.json"
    lab.lut.save(path)
    other = Space("tfnas", resolution=64, width_mult=0.25, num_classes=10)
    with pytest.raises(HwnasError, match=r"for another space: resolution 32 \(asked for 64\)"):
        LookupTable.load(path, expect_space=other)
    with pytest.raises(HwnasError, match="measured on backend 'ort-cpu', not 'ort-cuda'"):
        LookupTable.load(path, expect_backend="ort-cuda")
    with pytest.raises(HwnasError, match="is for batch 1, not 8"):
        LookupTable.load(path, expect_batch=8)
    with pytest.raises(HwnasError, match="another target: threads 1, this target has 4"):
        LookupTable.load(path, expect_fingerprint={**lab.lut.fingerprint, "threads": 4})

    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(HwnasError, match="is not valid JSON"):
        LookupTable.load(path)
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(HwnasError, match="is not an hwnas lookup table"):
        LookupTable.load(path)
    doc = lab.lut.to_json()
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(HwnasError, match="format version 99"):
        LookupTable.load(path)
    del doc["entries"]
    path.write_text(json.dumps(doc))
    with pytest.raises(HwnasError, match="corrupt: missing or malformed field 'entries'"):
        LookupTable.load(path)
    with pytest.raises(HwnasError, match="cannot read lookup table"):
        LookupTable.load(tmp_path / "nope.json")


def test_uniform_latency_is_the_mean_over_uniformly_drawn_architectures(lab):
    import numpy as np

    from hwnas.surrogates.base import uniform_latency

    space, rng = lab.space, np.random.default_rng(0)
    total, n = 0.0, 3000
    for _ in range(n):  # ops and depths uniform and independent, default widths
        stages = []
        for i, shape in enumerate(space.stages):
            depth = int(rng.integers(shape.min_depth, shape.max_depth + 1))
            stages.append({"layers": [str(rng.choice(space.op_names(i, j))) for j in range(depth)]})
        total += lab.lut.predict({"space": space.name, "width_mult": space.width_mult, "stages": stages})
    assert uniform_latency(lab.lut) == pytest.approx(total / n, rel=0.01)
