"""The YAML configuration of a slot search: defaults, types, unknown keys, flag overrides."""

from __future__ import annotations

import pytest

from hwnas.errors import HwnasError
from hwnas.search import slot_config
from hwnas.cli.methods.modnas import build_config


def write(tmp_path, text):
    p = tmp_path / "search.yaml"
    p.write_text(text)
    return p


def test_defaults_and_a_full_file(tmp_path):
    cfg = slot_config.load(write(tmp_path, """
model: torchvision:resnet18
resolution: 64
slots: {kinds: [block], candidates: {block: [original, RB5, skip]}}
optimizer: {name: tpe, trials: 12}
constraints: {latency: 0.5, params: 2.0e6}
backend: {processes: 5}
"""))
    assert cfg["model"] == "torchvision:resnet18" and cfg["optimizer"] == {**slot_config.defaults()["optimizer"],
                                                                             "name": "tpe", "trials": 12}
    assert cfg["constraints"] == {"latency": 0.5, "params": 2.0e6} and cfg["backend"]["processes"] == 5
    assert cfg["estimator"] == slot_config.defaults()["estimator"]
    assert slot_config.load(write(tmp_path, "")) == slot_config.defaults()


@pytest.mark.parametrize("text, message", [
    ("optimiser: {name: tpe}", "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    ("optimizer: {trails: 3}", "unknown key 'optimizer.trails' (did you mean optimizer.'trials'?)"),
    ("optimizer: {trials: ten}", "optimizer.trials must be an integer, got 'ten'"),
    ("optimizer: {trials: 0}", "optimizer.trials = 0 is out of range"),
    ("optimizer: tpe", "optimizer must be a mapping"),
    ("objectives: accuracy", "objectives must be a non-empty list of names"),
    ("constraints: {latency: fast}", "constraints must be a mapping of metric: number"),
    ("lookup_table: 1", "lookup_table must be true or false"),
    ("resolution: 32.5", "resolution must be an integer"),
    ("model: [a, b]", "model must be a non-empty string"),
    ("- a list", "expected a mapping of settings"),
    ("model: 'unclosed", "not valid YAML at line 1"),
])
def test_bad_files(tmp_path, text, message):
    with pytest.raises(HwnasError, match=None) as e:
        slot_config.load(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, "optimizer: {name: tpe, trials: 12}\nconstraints: {params: 1.0e6}\ndata: {name: digits}\n")
    cfg = build_config({"config_path": path, "trials": 30, "objectives": "accuracy,params",
                        "constraints": ("memory=5e5",), "target": 0.4, "seed": 3})
    assert cfg["optimizer"]["name"] == "tpe" and cfg["optimizer"]["trials"] == 30
    assert cfg["objectives"] == ["accuracy", "params"] and cfg["seed"] == 3 and cfg["data"]["name"] == "digits"
    assert cfg["constraints"] == {"params": 1.0e6, "memory": 5e5, "latency": 0.4}
    with pytest.raises(HwnasError, match="--trials: optimizer.trials = 0 is out of range"):
        build_config({"config_path": path, "trials": 0})
