"""`hwnas train`: a fixed architecture trained from scratch on real data, reproducibly."""

import json

import pytest

from hwnas.cli import main as cli_main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.search.train import train_arch
from hwnas.spaces.mbconv import Space

ARGS = ["--limit", "400", "--resolution", "16", "--epochs", "4", "--batch-size", "32"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, limit=400)


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    code = cli_main.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_learns_and_the_cli_reproduces_it(digits, tmp_path, monkeypatch, capsys):
    space = Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)
    arch = space.random_archs(1, seed=0)[0]
    result = train_arch(space, arch, digits, epochs=4, batch_size=32, show_progress=False)
    assert result["test_acc"] > 0.4  # chance is 0.1
    assert len(result["history"]) == 4 and result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["arch_hash"] == arch.hash and result["space"]["resolution"] == 16

    (tmp_path / "a.json").write_text(json.dumps(arch.to_json()))
    code, out, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), *ARGS,
                          "--out", str(tmp_path / "r.json"))
    assert code == 0, err
    written = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(out.splitlines()[-1])["test_acc"] == written["test_acc"] == result["test_acc"]
    assert written["history"] == result["history"]  # same seed, same data: the same run
    assert "test accuracy" in err


def test_train_bad_inputs(digits, tmp_path, monkeypatch, capsys):
    space = Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)
    arch = space.default_arch()
    with pytest.raises(HwnasError, match="epochs"):
        train_arch(space, arch, digits, epochs=0)
    with pytest.raises(HwnasError, match="classes"):
        train_arch(Space("tfnas", 16, 0.25, 100), arch, digits, epochs=1)
    code, _, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "none.json"), *ARGS)
    assert code == 2 and "cannot read architecture file" in err and err.strip().count("\n") == 0
    (tmp_path / "a.json").write_text(json.dumps(arch.to_json()))
    code, _, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), "--width-mult", "0.5", *ARGS)
    assert code == 2 and "width_mult" in err
    code, _, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), "--data", "cifar10:/nonexistent")
    assert code == 2 and "not found" in err


def test_train_scales_the_architecture_to_a_target_latency_first(tmp_path, monkeypatch, capsys):
    """--target/--lut: random architectures of the same latency, for comparison with a searched one."""
    from hwnas.backends import get_backend
    from hwnas.spaces.elastic import scale_widths
    from hwnas.spaces.mbconv import distinct_layers
    from hwnas.surrogates.lut import LookupTable, entry_key

    deploy = Space("tfnas", resolution=64, width_mult=0.25, num_classes=10)
    points = {}
    for spec in distinct_layers(deploy, 1, 1):  # every width: the aligned and unaligned curves
        points.setdefault(entry_key(spec), {})[spec.mid] = 0.02 + 1e-3 * spec.mid if spec.part == "searchable" else 0.05
    fingerprint = get_backend("ort-cpu").fingerprint(1)  # measured here: a table of another target is refused
    lut = LookupTable(deploy, 1, "ort-cpu", fingerprint, {}, 16, {k: (sorted(p), [p[m] for m in sorted(p)]) for k, p in points.items()})
    lut.save(tmp_path / "lut.json")
    arch = deploy.random_archs(1, seed=4)[0]
    lo, hi = lut.predict(scale_widths(deploy, arch, 0, 1e-3)), lut.predict(scale_widths(deploy, arch, 0, 1e3))
    target = round(0.5 * (lo + hi), 3)
    (tmp_path / "a.json").write_text(json.dumps(arch.to_json()))
    code, out, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), "--limit", "100",
                          "--resolution", "16", "--epochs", "1", "--target", str(target), "--lut", str(tmp_path / "lut.json"),
                          "--out", str(tmp_path / "r.json"))
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["predicted_ms"] <= target and (target - r["predicted_ms"]) / target < 0.01
    assert r["predicted_ms"] == lut.predict(r["arch"]) and r["arch"] != arch.to_json()
    code, _, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), "--target", "5")
    assert code == 2 and "--target and --lut together" in err
    # A table measured on another target (here another CPU) would scale to the wrong latency: refused.
    doc = json.loads((tmp_path / "lut.json").read_text())
    doc["fingerprint"]["cpu"] = "another CPU"
    (tmp_path / "other.json").write_text(json.dumps(doc))
    code, _, err = _cli(monkeypatch, capsys, "train", "--arch", str(tmp_path / "a.json"), "--limit", "100",
                        "--resolution", "16", "--epochs", "1", "--target", str(target), "--lut", str(tmp_path / "other.json"))
    assert code == 2 and "another target: cpu 'another CPU'" in err
