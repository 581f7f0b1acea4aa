"""One conformance set for the store, run over SQLite and PostgreSQL (a real server, skipped with
its reason where none is given)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hwnas.backends import Measurement, summarize
from hwnas.errors import HwnasError
from hwnas.store import SCHEMA_VERSION, Store, measurement_key, store_url


def a_measurement(samples=(1.0, 2.0, 3.0)) -> Measurement:
    return Measurement(list(samples), summarize(samples), False, 12.5, 9.0, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 3})


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """Where a store lives: an SQLite file, or the test PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "m.sqlite")
    return request.getfixturevalue("pg_url")


def execute(where: str, *statements: str) -> None:
    """Raw SQL on the store's database, beside hwnas (to damage or age a store)."""
    engine = sa.create_engine(store_url(where) if "://" in where else f"sqlite:///{where}")
    with engine.begin() as conn:
        for s in statements:
            conn.exec_driver_sql(s)
    engine.dispose()


def test_round_trip_and_dataframe(where):
    with Store(where) as store:
        key = measurement_key("layer", {"layer": {"c_in": 8}}, {"backend": "ort-cpu"}, {"min_runs": 3})
        assert store.get(key) is None and len(store) == 0
        store.put(key, "layer", {"layer": {"c_in": 8}}, a_measurement())
        got = store.get(key)
        assert got.samples_ms == [1.0, 2.0, 3.0] and got.stats["median_ms"] == 2.0 and got.session_ms == 12.5
        assert got.fingerprint == {"backend": "ort-cpu", "threads": 1}
        df = store.dataframe(kind="layer")
        assert len(df) == 1 and df.loc[0, "spec"] == {"layer": {"c_in": 8}} and df.loc[0, "samples"] == [1.0, 2.0, 3.0]
        assert len(store.dataframe(kind="arch")) == 0 and len(store.dataframe(backend="ort-cpu")) == 1
        store.put(key, "layer", {"layer": {"c_in": 8}}, a_measurement((4.0, 5.0, 6.0)))  # replaces, not duplicates
        assert len(store) == 1 and store.get(key).stats["median_ms"] == 5.0
    with Store(where) as again:  # committed: visible to a new connection
        assert len(again) == 1


def test_replicates_and_reference_baselines(where):
    with Store(where) as store:
        for idx, retries in ((0, 0), (1, 2), (2, 1)):
            store.put_replicate("k", idx, a_measurement((1.0 + idx, 2.0, 3.0)), retries)
        store.put_replicate("k", 1, a_measurement((9.0, 9.0, 9.0)), 2)  # the same process again replaces it
        assert [m.samples_ms[0] for m in store.replicates("k")] == [1.0, 9.0, 3.0]
        assert store.replicate_retries("k") == 3 and store.replicate_retries("other") == 0
        store.drop_replicates("k")
        assert store.replicates("k") == []
        assert store.reference_baseline("t") is None
        store.put_reference_baseline("t", {"baseline_ms": 0.5, "n": 10})
        got = store.reference_baseline("t")
        assert got["baseline_ms"] == 0.5 and got["n"] == 10 and got["created_at"]


def test_keys_separate_targets_and_protocols():
    spec = {"layer": {"c_in": 8}}
    a = measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 3})
    assert a != measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 2}, {"min_runs": 3})
    assert a != measurement_key("layer", spec, {"backend": "ort-cpu", "threads": 1}, {"min_runs": 4})
    assert a == measurement_key("layer", dict(spec), {"threads": 1, "backend": "ort-cpu"}, {"min_runs": 3})


def test_a_newer_schema_is_refused(where):
    Store(where).close()
    execute(where, "UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(HwnasError, match=f"schema version 99, newer than this hwnas reads \\({SCHEMA_VERSION}\\)"):
        Store(where)


def test_an_older_schema_without_a_migration_or_a_damaged_version_is_refused(where):
    Store(where).close()
    for value in ("0", "two"):
        execute(where, f"UPDATE meta SET value='{value}' WHERE key='schema_version'")
        with pytest.raises(HwnasError, match=f"schema version .*{value}.*; this hwnas reads version {SCHEMA_VERSION} "
                                             "and upgrades from 1"):
            Store(where)


V1_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE measurements (key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec_hash TEXT NOT NULL, spec TEXT NOT NULL,
  backend TEXT NOT NULL, fingerprint TEXT NOT NULL, protocol TEXT NOT NULL, median_ms REAL NOT NULL, mean_ms REAL NOT NULL,
  std_ms REAL NOT NULL, iqr_ms REAL NOT NULL, p90_ms REAL NOT NULL, p99_ms REAL NOT NULL, min_ms REAL NOT NULL,
  max_ms REAL NOT NULL, cov REAL NOT NULL, n INTEGER NOT NULL, noisy INTEGER NOT NULL, session_ms REAL NOT NULL,
  first_run_ms REAL NOT NULL, samples TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "INSERT INTO meta VALUES ('schema_version', '1')",
    """INSERT INTO measurements VALUES ('k1', 'arch', 'h', '{}', 'ort-cpu', '{"backend":"ort-cpu"}', '{"min_runs":3}',
  2.0, 2.0, 0.1, 0.1, 2.1, 2.2, 1.9, 2.2, 0.05, 3, 0, 10.0, 4.0, '[1.9,2.0,2.2]', '2026-01-01T00:00:00+00:00')""",
)


def test_a_version_1_store_is_upgraded_in_place(where):
    execute(where, *V1_SCHEMA)
    with Store(where) as store:
        m = store.get("k1")
        assert m.stats["median_ms"] == 2.0 and m.samples_ms == [1.9, 2.0, 2.2] and m.flags == ["single-process"]
        df = store.dataframe()
        assert len(df) == 1 and df.loc[0, "processes"] == 1 and df.loc[0, "raw_median_ms"] == 2.0
        store.put_replicate("k1", 0, a_measurement())  # the tables version 1 lacked are there
    with Store(where) as again:  # upgraded once: the second open finds version 2
        assert len(again) == 1 and again.get("k1").flags == ["single-process"]


def test_a_foreign_database_is_refused(where):
    execute(where, "CREATE TABLE other (x INTEGER)")
    with pytest.raises(HwnasError, match="is a database but not an hwnas measurement store"):
        Store(where)


# --- SQLite only -------------------------------------------------------------------------------


def test_sqlite_is_the_default_with_a_wal_journal(tmp_path):
    for where in (tmp_path / "m.sqlite", f"sqlite:///{tmp_path / 'u.sqlite'}"):
        with Store(where) as store, store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "u.sqlite").is_file()


def test_not_a_database_and_bad_paths(tmp_path):
    path = tmp_path / "m.sqlite"
    path.write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(HwnasError, match="cannot use measurement store .*not a database"):
        Store(path)
    with pytest.raises(HwnasError, match="is a directory"):
        Store(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HwnasError, match="cannot create measurement store"):
        Store(blocker / "sub" / "m.sqlite")


# --- URLs ----------------------------------------------------------------------------------------


def test_database_urls_are_checked_before_any_connection():
    assert store_url("postgresql://u:p@h:5/d").drivername == "postgresql+psycopg"
    assert store_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    for bad, reason in (("postgresql://", "needs a host and a database"), ("postgresql://u:secret@h:port/d", "not a database URL"),
                        ("mysql://u@h/d", "SQLite .* or PostgreSQL"), ("://x", "not a database URL")):
        with pytest.raises(HwnasError, match=reason):
            store_url(bad)


def test_wrong_credentials_and_no_server_fail_in_one_line_at_once(pg_url):
    url = sa.make_url(pg_url)
    free = url.set(port=1)  # nothing listens on port 1: refused at once
    for where, reason in ((url.set(password="wrong"), "password authentication failed"),
                          (url.set(database="no_such_db"), "does not exist"), (free, "refused|failed")):
        started = time.monotonic()
        with pytest.raises(HwnasError, match=reason) as e:
            Store(where.render_as_string(hide_password=False), wait_s=60)
        assert time.monotonic() - started < 15 and "\n" not in str(e.value)
        assert "wrong" not in str(e.value)  # the password is never printed


def test_the_cli_takes_a_postgresql_url(pg_url, tmp_path):
    """`--db postgresql://...` through the CLI: one measurement stored, read back from the server."""
    cmd = [sys.executable, "-m", "hwnas.cli", "measure", "--space", "tfnas", "--resolution", "32", "--width-mult", "0.25",
           "--classes", "10", "--random", "--n", "1", "--min-runs", "5", "--min-time", "0", "--warmup", "1", "-k", "1",
           "--no-reference", "--db", pg_url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "HWNAS_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    with Store(pg_url) as store:
        assert len(store.dataframe(kind="arch")) == 1
    # the report reads the same store by its URL and names it with the password hidden
    from hwnas.report.document import Inputs

    warnings = []
    inp = Inputs([], pg_url, None, [], None, warnings.append)
    password = sa.make_url(pg_url).password
    assert not warnings and len(inp.arch_df) == 1
    hidden = f":{password}@"
    assert str(inp.store_path).startswith("postgresql") and ":***@" in str(inp.store_path)
    assert hidden not in str(inp.store_path)
    r = subprocess.run([sys.executable, "-m", "hwnas.cli", "report", "--db", pg_url, "--out",
                        str(tmp_path / "report")], capture_output=True, text=True, timeout=180)
    # one subnet and no lookup table is nothing to report, but the store was found and read
    assert "does not exist" not in r.stderr and hidden not in r.stderr, r.stderr


# --- faults, with real processes -----------------------------------------------------------------

WRITER = """
import sys
from hwnas.backends import Measurement, summarize
from hwnas.store import Store
where, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Store(where) as store:
    for i in range(n):
        key, samples = f"w{w}-{i}", [1.0, 2.0, 3.0 + i]
        m = Measurement(samples, summarize(samples), False, 1.0, 1.0, {"backend": "ort-cpu"}, {"writer": w})
        store.put_replicate(key, 0, m)
        store.put(key, "layer", {"w": w, "i": i}, m)
        store.drop_replicates(key)
"""


def integrity_problems(where: str) -> list[str]:
    """SQLite's integrity check; on PostgreSQL, amcheck's check of every index against its table."""
    engine = sa.create_engine(store_url(where) if "://" in where else f"sqlite:///{where}")
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            problems = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check") if r[0] != "ok"]
        else:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.exec_driver_sql(
                "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t "
                "ON t.oid = i.indrelid WHERE t.relname IN ('meta', 'measurements', 'replicates', 'reference_baselines')").all()
            assert len(indexes) >= 5
            problems = []
            for oid, name in indexes:
                try:
                    conn.exec_driver_sql(f"SELECT bt_index_check({oid}, true)")
                except sa.exc.DBAPIError as e:
                    problems.append(f"{name}: {e.orig}")
    engine.dispose()
    return problems


def test_four_concurrent_writers_lose_nothing(where):
    """4 processes x 50 measurements into one new store at once: every row there, once, intact."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, where, str(w), "50"], stderr=subprocess.PIPE, text=True)
               for w in range(4)]
    for p in writers:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store(where) as store:
        df = store.dataframe()
        assert len(store) == 200 and df["key"].is_unique
        assert set(df["key"]) == {f"w{w}-{i}" for w in range(4) for i in range(50)}
        assert all(store.get(f"w{w}-{i}").samples_ms[-1] == 3.0 + i for w in range(4) for i in range(50))
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM replicates").scalar() == 0
    assert integrity_problems(where) == []


class PrivateServer:
    """A PostgreSQL server of this test's own, to stop and start (as `postgres` where run as root)."""

    def __init__(self):
        import pwd
        import shutil
        import tempfile

        self.bin = Path(os.environ["HWNAS_TEST_PG_BIN"])
        self.dir = Path(tempfile.mkdtemp(prefix="hwnas-pg-test-"))
        self.dir.chmod(0o755)
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, pwd.getpwnam("postgres").pw_uid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._pg("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust")
        self.start()
        self._pg("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "t")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/t"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                 f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    if not os.environ.get("HWNAS_TEST_PG_URL") or not os.environ.get("HWNAS_TEST_PG_BIN"):
        pytest.skip("no PostgreSQL: HWNAS_TEST_PG_URL/HWNAS_TEST_PG_BIN unset (source .ci/postgres.sh to start one)")
    server = PrivateServer()
    yield server
    server.remove()


@pytest.fixture
def private_pg(pg_server):
    """The module's own server, running and emptied of hwnas's tables."""
    execute(pg_server.url, "DROP TABLE IF EXISTS meta, measurements, replicates, reference_baselines CASCADE")
    return pg_server


SLOW_WRITER = """
import sys, time
from hwnas.errors import HwnasError
from hwnas.backends import Measurement, summarize
from hwnas.store import Store
try:
    with Store(sys.argv[1]) as store:
        for i in range(int(sys.argv[2])):
            time.sleep(0.3)  # a measurement
            m = Measurement([1.0, 2.0], summarize([1.0, 2.0]), False, 1.0, 1.0, {"backend": "ort-cpu"}, {})
            store.put(f"k{i}", "layer", {"i": i}, m)
except HwnasError as e:  # as hwnas's CLI reports it
    print(f"hwnas: error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def writer(url: str, n: int, wait_s: float) -> tuple[subprocess.Popen, list[str]]:
    """A process that stores a measurement every 0.3 s; its stderr lines, as they come."""
    import threading

    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, url, str(n)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HWNAS_STORE_WAIT_S": str(wait_s)})
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return proc, err


def stored_rows(url: str) -> int:
    try:
        with Store(url, wait_s=0) as store:
            return len(store)
    except HwnasError:
        return -1


def wait_until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_store_that_stops_answering_is_waited_for_then_written(private_pg):
    job, err = writer(private_pg.url, 20, 60)
    wait_until(lambda: stored_rows(private_pg.url) >= 3 or job.poll() is not None, 60)
    private_pg.stop()
    # The server stays away until the job has a result it cannot write and says it holds it.
    wait_until(lambda: any("holding the result" in line for line in err) or job.poll() is not None, 60)
    time.sleep(1)
    private_pg.start()
    job.wait(timeout=120)
    assert job.returncode == 0, "".join(err)
    assert any("does not answer" in line and "holding the result" in line for line in err)
    assert stored_rows(private_pg.url) == 20  # the held one too: nothing lost


def test_a_store_that_stays_away_stops_the_job_in_one_line(private_pg):
    job, err = writer(private_pg.url, 20, 2)
    wait_until(lambda: stored_rows(private_pg.url) >= 3 or job.poll() is not None, 60)
    private_pg.stop()
    started = time.monotonic()
    job.wait(timeout=60)
    assert job.returncode == 2 and time.monotonic() - started < 20 and not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("hwnas: error: ")]
    assert len(errors) == 1 and errors[0].startswith("hwnas: error: measurement store ")
    assert "did not answer for 2 s" in errors[0] and "every measurement committed before is kept" in errors[0]
    private_pg.start()
    assert 3 <= stored_rows(private_pg.url) < 20
