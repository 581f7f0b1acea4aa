from hwnas.measure import Measurer
from hwnas.profilers import get_backend
from hwnas.store import Store


def test_measured_once_then_reused_and_force_remeasures(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol)
    arch = tiny_space.random_archs(1, seed=0)[0]
    first = measurer.arch(tiny_space, arch)
    again = measurer.arch(tiny_space, arch)
    assert not first.cached and again.cached
    assert again.measurement.samples_ms == first.measurement.samples_ms
    forced = Measurer(get_backend("ort-cpu"), store, fast_protocol, force=True).arch(tiny_space, arch)
    assert not forced.cached
    assert len(store) == 1  # re-measured in place


def test_layers_and_pairs_are_separate_entries(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol)
    specs = tiny_space.layers(tiny_space.default_arch())
    measurer.layer(specs[2])
    measurer.layer(specs[3])
    measurer.layers(specs[2:4])
    df = store.dataframe()
    assert sorted(df["kind"]) == ["layer", "layer", "layers"]
    assert (df["median_ms"] > 0).all()


def test_torch_cpu_baseline_measures_the_same_subnet(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    arch = tiny_space.default_arch()
    m = Measurer(get_backend("torch-cpu"), store, fast_protocol).arch(tiny_space, arch).measurement
    assert m.fingerprint["backend"] == "torch-cpu" and m.median_ms > 0
    o = Measurer(get_backend("ort-cpu"), store, fast_protocol).arch(tiny_space, arch).measurement
    assert o.fingerprint["backend"] == "ort-cpu" and len(store) == 2
