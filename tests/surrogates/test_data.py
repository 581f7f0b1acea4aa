import csv
import json

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.surrogates.data import Subnets, read_csv, scaled_random_archs, split


def _write(path, rows, header=("arch", "latency_ms")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_round_trip(tiny_space, tmp_path):
    archs = tiny_space.random_archs(3, seed=0)
    path = _write(tmp_path / "a.csv", [(json.dumps(a.to_json()), 1.5 + i) for i, a in enumerate(archs)])
    data = read_csv(path, tiny_space)
    assert [a.hash for a in data.archs] == [a.hash for a in archs]
    assert data.latency_ms.tolist() == [1.5, 2.5, 3.5]


@pytest.mark.parametrize("row, message", [
    (("{not json", "1.0"), r"line 3: arch is not valid JSON"),
    (('{"space": "proxyless", "stages": []}', "1.0"), r"line 3: architecture.space is 'proxyless'"),
    ((None, "-2"), r"line 3: latency_ms must be a positive number, got '-2'"),
    ((None, "fast"), r"line 3: latency_ms must be a positive number, got 'fast'"),
    ((None,), r"line 3: wrong number of fields"),
])
def test_malformed_csv_rows_are_named(tiny_space, tmp_path, row, message):
    good = json.dumps(tiny_space.default_arch().to_json())
    row = tuple(good if v is None else v for v in row)
    path = _write(tmp_path / "bad.csv", [(good, "1.0"), row])
    with pytest.raises(HwnasError, match=message):
        read_csv(path, tiny_space)


def test_csv_needs_its_columns(tiny_space, tmp_path):
    with pytest.raises(HwnasError, match="needs columns arch and latency_ms; it lacks latency_ms"):
        read_csv(_write(tmp_path / "c.csv", [("x", "1")], header=("arch", "ms")), tiny_space)
    with pytest.raises(HwnasError, match="has no rows"):
        read_csv(_write(tmp_path / "d.csv", []), tiny_space)
    with pytest.raises(HwnasError, match="cannot read CSV"):
        read_csv(tmp_path / "missing.csv", tiny_space)


def test_split_is_disjoint_and_reproducible(tiny_space):
    archs = tiny_space.random_archs(30, seed=0)
    data = Subnets(archs, np.arange(1.0, 31.0))
    train, test = split(data, 8, seed=3)
    assert len(test) == 8 and len(train) == 22
    assert not {a.hash for a in train.archs} & {a.hash for a in test.archs}
    again, _ = split(data, 8, seed=3)
    assert again.latency_ms.tolist() == train.latency_ms.tolist()
    other, _ = split(data, 8, seed=4)
    assert other.latency_ms.tolist() != train.latency_ms.tolist()


def test_scaled_random_archs_land_in_the_latency_range_on_aligned_widths(lab):
    aligned = lab.space.random_archs(30, seed=0, align=4)  # unaligned widths are slower: not this range
    lo, hi = np.quantile([lab.lut.predict(a) for a in aligned], [0.3, 0.6])
    archs = scaled_random_archs(lab.lut, lo, hi, 12, seed=3, align=4)
    assert archs == scaled_random_archs(lab.lut, lo, hi, 12, seed=3, align=4)
    predicted = np.array([lab.lut.predict(a) for a in archs])
    # at or just under a target in [lo, hi] (aligned widths step the latency a little)
    assert (predicted <= hi + 1e-9).all() and (predicted >= 0.95 * lo).all()
    assert len({round(p, 6) for p in predicted}) > 6  # targets spread over the range, not one value
    for arch in archs:
        for i, stage in enumerate(arch.stages):
            for j, layer in enumerate(stage):
                w_lo, w_hi = lab.space.width_range(layer.op, lab.space.layer_c_in(i, j))
                assert layer.mid % 4 == 0 or layer.mid in (w_lo, w_hi)
    fastest = min(lab.lut.predict(a) for a in aligned)
    with pytest.raises(HwnasError, match="could be scaled into"):
        scaled_random_archs(lab.lut, 0.1 * fastest, 0.2 * fastest, 2)
    with pytest.raises(HwnasError, match="0 < lo <= hi"):
        scaled_random_archs(lab.lut, hi, lo, 2)
