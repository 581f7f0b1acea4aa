import json

import pytest

from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import SKIP, LayerSpec, Space, distinct_layers, make_divisible, width_grid
from hwnas.spaces.references import reference_archs


def tfnas_a() -> dict:
    """TF-NAS-A as seed 000 Table 14 lists it (stages 3-8), as a JSON document."""
    return reference_archs(Space("tfnas"))["TF-NAS-A"].to_json()


def test_tfnas_shapes_follow_table_1():
    s = Space("tfnas")
    assert [st.c_out for st in s.stages] == [24, 40, 80, 112, 192, 320]
    assert [st.stride for st in s.stages] == [2, 2, 2, 1, 2, 1]
    assert [(st.min_depth, st.max_depth) for st in s.stages] == [(1, 2), (1, 3), (1, 4), (1, 4), (1, 4), (1, 1)]
    assert [st.act for st in s.stages] == ["relu"] + ["swish"] * 5
    assert len(s.ops) == 8
    assert s.width_range("k3_e3", 24) == (48, 96) and s.width_range("k5_e6_se", 24) == (96, 192)


def test_tfnas_a_validates_and_its_layers_match_the_table():
    s = Space("tfnas")
    arch = s.validate(tfnas_a())
    specs = s.layers(arch)
    searchable = [x for x in specs if x.part == "searchable"]
    assert len(searchable) == 18
    assert [x.h for x in searchable[:3]] == [112, 56, 56]
    assert (searchable[0].c_in, searchable[0].mid, searchable[0].se, searchable[0].c_out) == (16, 83, 32, 24)
    assert searchable[-1].h == 7 and searchable[-1].c_out == 320
    assert specs[-1].kind == "head" and specs[-1].h == 7


def test_proxyless_space_has_21_layers_and_141_choices():
    s = Space("proxyless")
    assert sum(st.max_depth for st in s.stages) == 21
    n_choices = sum(len(s.op_names(i, j)) for i, st in enumerate(s.stages) for j in range(st.max_depth))
    assert n_choices == 15 * 7 + 6 * 6
    assert SKIP not in s.op_names(2, 0) and SKIP in s.op_names(2, 1)


def test_canonical_form_and_hash_are_stable():
    s = Space("tfnas")
    a = s.validate(tfnas_a())
    shuffled = json.loads(json.dumps(tfnas_a()))
    shuffled["stages"][0]["layers"][0] = dict(reversed(list(shuffled["stages"][0]["layers"][0].items())))
    assert s.validate(shuffled).hash == a.hash
    assert s.validate(a.to_json()) == a
    assert s.validate({"stages": [{"layers": ["k3_e3"]}] * 6}).stages[0][0].mid == 48  # defaults filled in


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["stages"][1]["layers"][0].update(op="k7_e3"), "stages[1].layers[0].op 'k7_e3'"),
        (lambda d: d["stages"][1]["layers"][0].update(mid=5000), "stages[1].layers[0].mid = 5000 is out of range"),
        (lambda d: d["stages"][1]["layers"][0].update(mid="wide"), "stages[1].layers[0].mid must be an integer"),
        (lambda d: d["stages"][1]["layers"][0].update(se=7), "stages[1].layers[0].se = 7"),
        (lambda d: d["stages"][0].update(depth=3), "stages[0].depth = 3 is out of range"),
        (lambda d: d["stages"][2].update(depth=2), "stages[2].layers has 4 layers but depth is 2"),
        (lambda d: d["stages"].pop(), "has 5 stages"),
        (lambda d: d.update(space="proxyless"), "architecture.space is 'proxyless'"),
        (lambda d: d.update(width_mult=0.5), "width_mult is 0.5"),
        (lambda d: d.update(colour="red"), "unknown field 'colour'"),
        (lambda d: d["stages"][0]["layers"][0].update(kernel=3), "stages[0].layers[0] has unknown field 'kernel'"),
        (lambda d: d.update(stages="all"), "architecture.stages must be a list"),
    ],
)
def test_validation_names_the_bad_field(mutate, message):
    doc = tfnas_a()
    mutate(doc)
    with pytest.raises(HwnasError, match=None) as e:
        Space("tfnas").validate(doc)
    assert message in str(e.value)


def test_proxyless_skip_only_where_shapes_match():
    s = Space("proxyless")
    doc = s.default_arch().to_json()
    doc["stages"][0]["layers"][1] = {"op": "skip"}
    assert s.validate(doc).stages[0][1].op == SKIP
    doc["stages"][0]["layers"][0] = {"op": "skip"}
    with pytest.raises(HwnasError, match=r"stages\[0\].layers\[0\].op 'skip'"):
        s.validate(doc)


def test_mac_and_param_counts_by_hand():
    # stem: 112*112 outputs x 3x3x3 x 32 channels
    s = Space("tfnas")
    assert s.stem().macs == 112 * 112 * 27 * 32
    assert s.stem().params == 27 * 32 + 64
    # k5 e3 with SE at 56x56, C_in 24 -> 40, stride 2, mid 72, se 24
    spec = LayerSpec("mbinvres", 24, 40, 5, 2, "swish", 56, 56, mid=72, se=24)
    expand, dw, se, project = 56 * 56 * 24 * 72, 28 * 28 * 72 * 25, 2 * 72 * 24, 28 * 28 * 72 * 40
    assert spec.macs == expand + dw + se + project
    assert spec.params == (24 * 72 + 144) + (72 * 25 + 144) + (2 * 72 * 24 + 24 + 72) + (72 * 40 + 80)
    # the fixed e1 block has no expansion conv
    fixed = s.fixed_block()
    assert not fixed.has_expand and fixed.macs == 112 * 112 * 32 * 9 + 2 * 32 * 8 + 112 * 112 * 32 * 16
    head = s.head(7)
    assert head.macs == 49 * 320 * 1280 + 1280 * 1000


def test_random_archs_are_reproducible_and_cover_the_space():
    s = Space("tfnas")
    a, b = s.random_archs(50, seed=3), s.random_archs(50, seed=3)
    assert a == b and a != s.random_archs(50, seed=4)
    ops = {layer.op for arch in a for stage in arch.stages for layer in stage}
    depths = {arch.depths for arch in a}
    mids = {layer.mid for arch in a for layer in arch.stages[2]}
    assert ops == set(s.ops) and len(depths) > 20 and len(mids) > 20
    for arch in a:
        s.validate(arch)


def test_aligned_random_archs_round_the_same_draws_onto_the_alignment():
    s = Space("tfnas", width_mult=0.5)
    plain, aligned = s.random_archs(30, seed=5), s.random_archs(30, seed=5, align=4)
    assert s.random_archs(30, seed=5, align=1) == plain  # the same draws: stores stay reproducible
    assert [a.depths for a in aligned] == [a.depths for a in plain]
    for p, a in zip(plain, aligned):
        for i, (ps, as_) in enumerate(zip(p.stages, a.stages)):
            for j, (pl, al) in enumerate(zip(ps, as_)):
                lo, hi = s.width_range(al.op, s.layer_c_in(i, j))
                assert al.op == pl.op and abs(al.mid - pl.mid) <= 2
                assert al.mid % 4 == 0 or al.mid in (lo, hi)
    assert any(layer.mid % 4 for arch in plain for stage in arch.stages for layer in stage)
    with pytest.raises(HwnasError, match="width alignment"):
        s.random_archs(1, align=0)


def test_small_variants_scale_channels():
    s = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    assert s.stem_channels == 8 and all(st.c_out % 8 == 0 for st in s.stages)
    assert s.layers(s.default_arch())[-1].num_classes == 10
    assert make_divisible(10) == 16 and make_divisible(1280 * 0.25) == 320


@pytest.mark.parametrize("kwargs", [{"resolution": 8}, {"resolution": 224.5}, {"width_mult": 0}, {"num_classes": 1}])
def test_bad_space_parameters(kwargs):
    with pytest.raises(HwnasError):
        Space("tfnas", **kwargs)


def test_unknown_space_suggests_the_close_name():
    with pytest.raises(HwnasError, match="did you mean 'tfnas'"):
        Space("tfnsa")


def test_distinct_layers_and_width_grid():
    assert width_grid(48, 96, 8) == [48, 56, 64, 72, 80, 88, 96]
    assert width_grid(50, 70, 16) == [50, 64, 70]
    s = Space("tfnas", resolution=64, width_mult=0.5, num_classes=10)
    default = distinct_layers(s)
    assert len(set(default)) == len(default)
    assert {x.part for x in default} == {"stem", "fixed", "searchable", "head"}
    for arch in s.random_archs(10, 0):  # every layer of every arch at default widths is in the list
        arch = s.validate({"stages": [{"layers": [x.op for x in st]} for st in arch.stages], "width_mult": 0.5})
        assert set(s.layers(arch)) <= set(default)
    grid = distinct_layers(s, width_step=8)
    assert len(grid) > len(default)
