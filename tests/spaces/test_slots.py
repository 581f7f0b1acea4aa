"""Slot spaces: conversion of torchvision models and a user's own model, candidates, architectures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.spaces.slots import CANDIDATES, ORIGINAL, SlotSpace, load_model, register_candidate

HERE = Path(__file__).resolve().parent
TOY = str(HERE.parent / "search")  # toy_model.py: a user's own models
sys.path.insert(0, TOY)


@pytest.fixture(scope="module")
def mnv2():
    return SlotSpace("torchvision:mobilenet_v2", resolution=32, num_classes=10, width_mult=0.25)


@pytest.fixture(scope="module")
def r18():
    return SlotSpace("torchvision:resnet18", resolution=32, num_classes=10)


def original_outputs_equal(space: SlotSpace) -> bool:
    torch.manual_seed(0)  # the seed the space builds its template with
    net = load_model(space.model, space.num_classes, space.model_kwargs).eval()
    x = torch.randn(2, 3, space.resolution, space.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(net(x), space.build(space.default_arch())(x))


def test_mobilenet_v2_slots(mnv2):
    kinds = [s.kind for s in mnv2.slots]
    assert len(mnv2.slots) == 18 and kinds.count("mbconv") == 17 and kinds.count("conv") == 1  # 17 inverted residuals + stem
    assert all(s.default == ORIGINAL for s in mnv2.slots)
    # skip only where the shapes allow it (stride 1, same channels): the 10 residual blocks, and
    # features.1, whose 16 output channels round up to 8 = its input at width 0.25
    assert sum("skip" in s.candidates for s in mnv2.slots) == 11
    assert original_outputs_equal(mnv2)


def test_resnet18_slots(r18):
    kinds = [s.kind for s in r18.slots]
    assert len(r18.slots) == 9 and kinds.count("block") == 8 and kinds.count("conv") == 1
    assert original_outputs_equal(r18)


def test_another_choice_changes_the_network(mnv2):
    arch = mnv2.arch(["NC5"] + [s.default for s in mnv2.slots[1:]])
    assert arch.hash != mnv2.default_arch().hash
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(mnv2.build(arch)(x), mnv2.build(mnv2.default_arch())(x))


@pytest.mark.parametrize("space_name", ["mnv2", "r18"])
def test_every_candidate_fits_its_slot(space_name, request):
    space = request.getfixturevalue(space_name)
    for slot in space.slots:
        for c in slot.candidates:
            with torch.no_grad():
                y = space.make_candidate(slot, c).eval()(torch.zeros(1, *slot.in_shape))
            assert tuple(y.shape[1:]) == slot.out_shape, (slot.name, c)
    for arch in space.random_archs(3, seed=2):
        with torch.no_grad():
            assert space.build(arch)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_macs_match_the_published_count():
    # torchvision lists mobilenet_v2 at 0.30 GFLOPS (multiply-accumulates) at 224 px
    space = SlotSpace("torchvision:mobilenet_v2", resolution=224, num_classes=1000,
                      candidates={"mbconv": [ORIGINAL], "conv": [ORIGINAL]})  # no candidate to try at 224 px
    costs = space.costs(space.default_arch())
    assert abs(costs["macs"] / 1e6 - 300.8) < 3
    assert costs["params"] == sum(p.numel() for p in load_model("torchvision:mobilenet_v2", 1000).parameters())


def test_user_slots_and_arch_json():
    space = get_space("slots", model="toy_model:toy", resolution=16, num_classes=10)
    assert [s.kind for s in space.slots] == ["conv", "mbconv", "mbconv"]
    assert space.slots[2].candidates == ("MB3E3", "MB5E3", "MB3E6")  # the Slot's own list
    assert ORIGINAL not in space.slots[1].candidates and "skip" in space.slots[1].candidates
    arch = space.sample(np.random.default_rng(0))
    doc = json.loads(json.dumps(arch.to_json()))
    assert space.validate(doc) == arch and space.validate(doc).hash == arch.hash
    with pytest.raises(HwnasError, match="not a candidate"):
        space.validate({"choices": {"4": "MB7E6"}})
    with pytest.raises(HwnasError, match="does not have"):
        space.validate({"choices": {"nope": "MB3E3"}})


def test_a_candidate_that_does_not_fit_is_refused():
    register_candidate("WIDE", ("mbconv",), lambda ci, co, s: nn.Conv2d(ci, co + 1, 1, s))
    try:
        with pytest.raises(HwnasError, match="candidate WIDE does not fit slot 3"):
            SlotSpace("toy_model:toy", resolution=16, num_classes=10, candidates={"mbconv": ["MB3E3", "WIDE"]})
        # not named: it is simply not offered there
        assert all("WIDE" not in s.candidates for s in SlotSpace("toy_model:toy", resolution=16, num_classes=10).slots)
    finally:
        del CANDIDATES["WIDE"]


@pytest.mark.parametrize("model, message", [
    ("no_such_package_xyz:make", "cannot import no_such_package_xyz"),
    ("toy_model:not_a_module", "returned a str, not a torch.nn.Module"),
    ("toy_model:plain", "no slot-able module"),
    ("torchvision:mobilenet_v9", "did you mean 'mobilenet_v2'"),
    ("mobilenet_v2", "must be 'torchvision:NAME'"),
])
def test_bad_models(model, message):
    with pytest.raises(HwnasError, match=message):
        SlotSpace(model, resolution=16, num_classes=10)


def test_info_lists_the_slots(capsys):
    from hwnas.cli.main import main

    assert main(["info", "--model", "toy_model:toy", "--resolution", "16", "--classes", "10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in doc["slots"]] == ["0", "3", "4"]
    assert doc["slots"][2]["in_shape"] == [8, 8, 8] and doc["slots"][2]["out_shape"] == [16, 4, 4]
    assert main(["info", "--model", "toy_model:plain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no slot-able module" in err
