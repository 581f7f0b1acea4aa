import csv
import json

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.surrogates.data import Subnets, read_csv, split


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
