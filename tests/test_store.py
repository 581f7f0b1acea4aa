import sqlite3

import pytest

from hwnas.errors import HwnasError
from hwnas.profilers import Measurement, summarize
from hwnas.store import SCHEMA_VERSION, Store, measurement_key


def a_measurement(samples=(1.0, 2.0, 3.0)) -> Measurement:
    return Measurement(list(samples), summarize(samples), False, 12.5, 9.0, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 3})


def test_round_trip_and_dataframe(tmp_path):
    with Store(tmp_path / "m.sqlite") as store:
        key = measurement_key("layer", {"layer": {"c_in": 8}}, {"backend": "ort-cpu"}, {"min_runs": 3})
        assert store.get(key) is None
        store.put(key, "layer", {"layer": {"c_in": 8}}, a_measurement())
        got = store.get(key)
        assert got.samples_ms == [1.0, 2.0, 3.0] and got.stats["median_ms"] == 2.0 and got.session_ms == 12.5
        assert got.fingerprint == {"backend": "ort-cpu", "threads": 1}
        df = store.dataframe(kind="layer")
        assert len(df) == 1 and df.loc[0, "spec"] == {"layer": {"c_in": 8}} and df.loc[0, "samples"] == [1.0, 2.0, 3.0]
        assert len(store.dataframe(kind="arch")) == 0
    with Store(tmp_path / "m.sqlite") as again:  # committed: visible to a new connection
        assert len(again) == 1


def test_keys_separate_targets_and_protocols():
    spec = {"layer": {"c_in": 8}}
    a = measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 3})
    assert a != measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 2}, {"min_runs": 3})
    assert a != measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 4})
    assert a == measurement_key("layer", dict(spec), {"threads": 1, "backend": "ort-cpu"}, {"min_runs": 3})


def test_wal_journal(tmp_path):
    with Store(tmp_path / "m.sqlite") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_is_checked(tmp_path):
    path = tmp_path / "m.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(HwnasError, match=f"schema version 99; this hwnas reads version {SCHEMA_VERSION}"):
        Store(path)


@pytest.mark.parametrize("content", [b"not a database at all, just text" * 10])
def test_not_a_database(tmp_path, content):
    path = tmp_path / "m.sqlite"
    path.write_bytes(content)
    with pytest.raises(HwnasError, match="cannot use measurement store"):
        Store(path)


def test_foreign_sqlite_file_and_bad_paths(tmp_path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(HwnasError, match="not an hwnas measurement store"):
        Store(other)
    with pytest.raises(HwnasError, match="is a directory"):
        Store(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HwnasError, match="cannot create measurement store"):
        Store(blocker / "sub" / "m.sqlite")
