"""The measurement store: one row per (what was measured, target, protocol), behind a SQLAlchemy URL.

SQLite by default (a file path, WAL journal): one machine. PostgreSQL for a fleet
(`postgresql://user:password@host:port/db`, the psycopg 3 driver): many jobs and writers at once,
which SQLite is not made for (Optuna's RDB storage gives the same advice).

Each measurement is committed as it completes, and each of its k processes before that
(`replicates`), so a crash loses at most the process in flight, and the same spec on the same
target is measured once. `reference_baselines` holds the reference model's baseline per target.

The schema carries its version (`meta.schema_version`). Opening a store checks it, as Optuna's RDB
storage does: an older version with a migration (`MIGRATIONS`) is upgraded in place inside the
check's transaction; an older one without, or a newer one, is refused in one line. Version 1 (one
process per measurement, no reference) upgrades to 2: its rows are kept and marked single-process.

A store that stops answering during a job (a PostgreSQL server restarting, a network cut) is
waited for, up to `wait_s`, with the result held in memory; then the write goes through, or the
job stops with one line. Nothing committed before is touched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import sqlalchemy as sa
from platformdirs import user_cache_dir

from hwnas.backends.protocol import Measurement
from hwnas.errors import HwnasError, first_line
from hwnas.jsonutil import canonical_json, content_hash, parse_json
from hwnas.validate import check_latency

SCHEMA_VERSION = 2
STAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "iqr_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "cov", "n")
WAIT_S = 300.0  # how long a job waits for a store that stopped answering; $HWNAS_STORE_WAIT_S
CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that does not answer at all, per attempt

METADATA = sa.MetaData()
META = sa.Table("meta", METADATA, sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))


def _v2_columns() -> tuple[sa.Column, ...]:
    """Added in version 2, with what a version-1 row reads as: one process, no reference."""
    return (
        sa.Column("processes", sa.Integer, nullable=False, server_default="1"),
        sa.Column("raw_median_ms", sa.Float),
        sa.Column("ci_low_ms", sa.Float),
        sa.Column("ci_high_ms", sa.Float),
        sa.Column("reference_ratio", sa.Float),
        sa.Column("flags", sa.Text, nullable=False, server_default='["single-process"]'),
        sa.Column("isolation", sa.Text, nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),  # JSON: stats beyond the columns, blocks, processes
    )


MEASUREMENTS = sa.Table(
    "measurements", METADATA,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),  # layer | arch | layers | onnx
    sa.Column("spec_hash", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON of what was measured
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),  # JSON of the target
    sa.Column("protocol", sa.Text, nullable=False),  # JSON of the measurement protocol
    *(sa.Column(c, sa.Integer if c == "n" else sa.Float, nullable=False) for c in STAT_COLUMNS),
    sa.Column("noisy", sa.Integer, nullable=False),
    sa.Column("session_ms", sa.Float, nullable=False),
    sa.Column("first_run_ms", sa.Float, nullable=False),
    sa.Column("samples", sa.Text, nullable=False),  # JSON list of every timed sample, ms
    sa.Column("created_at", sa.Text, nullable=False),
    *_v2_columns(),
    sa.Index("measurements_spec", "kind", "spec_hash"),
)
REPLICATES = sa.Table(
    "replicates", METADATA,
    sa.Column("key", sa.Text, primary_key=True), sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("measurement", sa.Text, nullable=False),  # JSON of one process's Measurement
    sa.Column("created_at", sa.Text, nullable=False),
)
REFERENCE_BASELINES = sa.Table(
    "reference_baselines", METADATA,
    sa.Column("target", sa.Text, primary_key=True), sa.Column("baseline_ms", sa.Float, nullable=False),
    sa.Column("info", sa.Text, nullable=False), sa.Column("created_at", sa.Text, nullable=False),
)


def _upgrade_1_to_2(conn: sa.Connection) -> None:
    """New columns with defaults that mark every old row single-process; nothing is rewritten or lost."""
    for column in _v2_columns():
        ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE measurements ADD COLUMN {ddl}")
    conn.exec_driver_sql("UPDATE measurements SET raw_median_ms = median_ms")


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {1: _upgrade_1_to_2}  # version -> its upgrade to the next


def default_db_path() -> Path:
    return Path(os.environ.get("HWNAS_DB") or Path(user_cache_dir("hwnas")) / "measurements.sqlite")


def measurement_key(kind: str, spec: dict[str, Any], fingerprint: dict[str, Any], protocol: dict[str, Any]) -> str:
    return content_hash({"kind": kind, "spec": spec, "target": fingerprint, "protocol": protocol}, length=24)


def is_url(where: str | Path | None) -> bool:
    return isinstance(where, str) and "://" in where


def store_url(where: str) -> sa.URL:
    """A database URL as SQLAlchemy takes it: sqlite:///PATH or postgresql://... (psycopg 3 driver)."""
    try:
        url = sa.make_url(where)
    except (sa.exc.ArgumentError, ValueError):  # its message repeats the text, password included
        raise HwnasError(f"--db {where.split('://')[0]}://... is not a database URL (a port that is no number, a "
                         "stray character?); give a file path, or postgresql://user:password@host:port/database") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+psycopg")
        if not url.host or not url.database:
            raise HwnasError(f"--db {url.render_as_string(hide_password=True)} needs a host and a database: "
                             "postgresql://user:password@host:port/database")
    elif url.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise HwnasError(f"--db {url.render_as_string(hide_password=True)}: hwnas stores measurements in SQLite "
                         "(a file path) or PostgreSQL (postgresql://...), not {url.drivername}")
    return url


class Store:
    def __init__(self, path: str | Path | None = None, wait_s: float | None = None):
        """`path`: an SQLite file, or a database URL (sqlite:///..., postgresql://...)."""
        self.wait_s = float(os.environ.get("HWNAS_STORE_WAIT_S", WAIT_S)) if wait_s is None else wait_s
        if is_url(path):
            self.url = store_url(str(path))
            self.path: Path | str = (Path(self.url.database) if self.url.get_backend_name() == "sqlite" and self.url.database
                                     else self.url.render_as_string(hide_password=True))
        else:
            self.path = Path(path) if path else default_db_path()
            self.url = sa.URL.create("sqlite", database=str(self.path))
        self.sqlite = self.url.get_backend_name() == "sqlite"
        if self.sqlite:
            self._prepare_sqlite_file()
        self.engine = self._engine()
        try:
            # A PostgreSQL server that is down is refused at once. SQLite in WAL mode answers "locked" without
            # its busy timeout while another process closes the file's last connection or recovers it
            # (sqlite.org/wal.html), so opening waits that out like any write.
            self._run(self._check_schema, wait=self.sqlite)
        except BaseException:
            self.engine.dispose()
            raise

    def _prepare_sqlite_file(self) -> None:
        path = Path(self.path)
        if str(path) in ("", ":memory:"):
            raise HwnasError("the measurement store must be a file, not an in-memory database")
        if path.is_dir():
            raise HwnasError(f"measurement store {path} is a directory; give a file path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HwnasError(f"cannot create measurement store {path}: {e.strerror or e}") from None

    def _engine(self) -> sa.Engine:
        if not self.sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        engine = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})

        # pysqlite's own transaction handling is off; each transaction begins here: writes take the
        # write lock at once (BEGIN IMMEDIATE), so two writers queue instead of failing midway.
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("hwnas_write") else "BEGIN")

        return engine

    # --- one transaction, waiting out a store that stopped answering ------------------------------

    def _run(self, work: Callable[[sa.Connection], Any], write: bool = True, wait: bool = True) -> Any:
        """`work(connection)` in one committed transaction. A lost connection is retried until
        `wait_s` has passed (the data to write waits in memory); any other failure is one line."""
        engine = self.engine.execution_options(hwnas_write=True) if write else self.engine
        deadline, pause = None, 0.2
        while True:
            try:
                with engine.begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as e:
                if not (wait and self._lost(e)):
                    raise HwnasError(f"cannot use measurement store {self.path}: {first_line(e.orig or e)}") from None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait_s
                    held = "holding the result and " if work != self._check_schema else ""
                    print(f"hwnas: measurement store {self.path} does not answer ({first_line(e.orig or e)}); {held}"
                          f"retrying for up to {self.wait_s:g} s", file=sys.stderr, flush=True)
                if now >= deadline:
                    raise HwnasError(f"measurement store {self.path} did not answer for {self.wait_s:g} s "
                                     f"({first_line(e.orig or e)}); every measurement committed before is kept: "
                                     "rerun the command when it is back to resume") from None
                time.sleep(min(pause, max(deadline - now, 0.01)))
                pause = min(pause * 2, 5.0)

    def _lost(self, e: sa.exc.DBAPIError) -> bool:
        """A failure that waiting may cure: a PostgreSQL connection that broke or was refused, an
        SQLite file another writer holds longer than its busy timeout."""
        if self.sqlite:
            return "locked" in str(e.orig) or "busy" in str(e.orig)
        return e.connection_invalidated or isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError))

    # --- the schema, checked and upgraded on open -------------------------------------------------

    def _check_schema(self, conn: sa.Connection) -> None:
        # One transaction from check to creation: a process opening a new store at the same time waits
        # (SQLite's write lock, PostgreSQL's advisory lock), then finds it complete.
        if not self.sqlite:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7340520)")
        tables = set(sa.inspect(conn).get_table_names())
        if "meta" in tables:
            row = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).first()
            try:
                found = int(row[0]) if row else None
            except (TypeError, ValueError):
                found = repr(row[0])[:40]  # damaged: reported below as a version this hwnas cannot read
            if isinstance(found, int) and found > SCHEMA_VERSION:
                raise HwnasError(f"measurement store {self.path} has schema version {found}, newer than this hwnas "
                                 f"reads ({SCHEMA_VERSION}): upgrade hwnas or use another --db")
            while isinstance(found, int) and found in MIGRATIONS and found < SCHEMA_VERSION:
                MIGRATIONS[found](conn)
                found += 1
                conn.execute(META.update().where(META.c.key == "schema_version").values(value=str(found)))
            if found != SCHEMA_VERSION:
                raise HwnasError(
                    f"measurement store {self.path} has schema version {found}; this hwnas reads version "
                    f"{SCHEMA_VERSION} and upgrades from {', '.join(map(str, sorted(MIGRATIONS)))}: use another --db"
                )
        elif tables:
            raise HwnasError(f"{self.path} is a database but not an hwnas measurement store "
                             f"(it holds {', '.join(sorted(tables)[:3])}); use another --db")
        METADATA.create_all(conn)  # the tables a version lacks (an upgraded one gains replicates, ...)
        if "meta" not in tables:
            conn.execute(META.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _upsert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Insert `row`, replacing the row of the same primary key (SQLite and PostgreSQL alike)."""
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(table).values(**row)
        keys = [c.name for c in table.primary_key]
        statement = statement.on_conflict_do_update(index_elements=keys,
                                                    set_={c: statement.excluded[c] for c in row if c not in keys})
        self._run(lambda conn: conn.execute(statement))

    def _read(self, query) -> list[sa.Row]:
        return self._run(lambda conn: conn.execute(query).all(), write=False)

    # --- measurements -------------------------------------------------------------------------------

    def get(self, key: str) -> Measurement | None:
        t = MEASUREMENTS.c
        rows = self._read(sa.select(
            t.samples, *(t[c] for c in STAT_COLUMNS), t.noisy, t.session_ms, t.first_run_ms, t.fingerprint, t.protocol,
            t.processes, t.ci_low_ms, t.ci_high_ms, t.reference_ratio, t.flags, t.isolation, t.detail,
        ).where(t.key == key))
        if not rows:
            return None
        samples, *rest = rows[0]
        stats = dict(zip(STAT_COLUMNS, rest[: len(STAT_COLUMNS)]))
        (noisy, session_ms, first_run_ms, fingerprint, protocol, _, ci_low, ci_high, ratio, flags, isolation,
         detail) = rest[len(STAT_COLUMNS):]
        damaged = f"measurement store {self.path} holds a damaged row {key}"
        try:
            check_latency("median_ms", stats["median_ms"])
        except HwnasError as e:
            raise HwnasError(f"{damaged} ({e}); re-measure it with --force") from None
        detail = parse_json(detail, damaged)
        stats.update(detail.get("stats", {}) if isinstance(detail, dict) else {})
        return Measurement(
            parse_json(samples, damaged), stats, bool(noisy), session_ms, first_run_ms, parse_json(fingerprint, damaged),
            parse_json(protocol, damaged), blocks=detail.get("blocks", []), processes=detail.get("processes", []),
            ci95_ms=[ci_low, ci_high] if ci_low is not None else [], reference_ratio=ratio,
            flags=parse_json(flags, damaged), isolation=isolation,
        )

    def put(self, key: str, kind: str, spec: dict[str, Any], m: Measurement) -> None:
        detail = {"stats": {k: v for k, v in m.stats.items() if k not in STAT_COLUMNS}, "blocks": m.blocks,
                  "processes": m.processes}
        self._upsert(MEASUREMENTS, {
            "key": key, "kind": kind, "spec_hash": content_hash(spec), "spec": canonical_json(spec),
            "backend": m.fingerprint.get("backend", ""), "fingerprint": canonical_json(m.fingerprint),
            "protocol": canonical_json(m.protocol), **{c: m.stats[c] for c in STAT_COLUMNS},
            "noisy": int(m.noisy), "session_ms": m.session_ms, "first_run_ms": m.first_run_ms,
            "samples": json.dumps(m.samples_ms), "created_at": _now(), "processes": max(len(m.processes), 1),
            "raw_median_ms": m.stats.get("raw_median_ms", m.stats["median_ms"]),
            "ci_low_ms": m.ci95_ms[0] if m.ci95_ms else None, "ci_high_ms": m.ci95_ms[1] if m.ci95_ms else None,
            "reference_ratio": m.reference_ratio, "flags": json.dumps(m.flags), "isolation": m.isolation,
            "detail": json.dumps(detail),
        })

    # --- one process of a measurement, committed before the measurement is complete ---------------

    def put_replicate(self, key: str, idx: int, m: Measurement, retries: int = 0) -> None:
        self._upsert(REPLICATES, {"key": key, "idx": idx, "retries": retries, "measurement": json.dumps(m.to_json()),
                                  "created_at": _now()})

    def replicates(self, key: str) -> list[Measurement]:
        t = REPLICATES.c
        rows = self._read(sa.select(t.measurement).where(t.key == key).order_by(t.idx))
        return [Measurement.from_json(json.loads(r[0])) for r in rows]

    def replicate_retries(self, key: str) -> int:
        t = REPLICATES.c
        return int(self._read(sa.select(sa.func.coalesce(sa.func.sum(t.retries), 0)).where(t.key == key))[0][0])

    def drop_replicates(self, key: str) -> None:
        self._run(lambda conn: conn.execute(REPLICATES.delete().where(REPLICATES.c.key == key)))

    # --- the reference model's baseline per target ---------------------------------------------------

    def reference_baseline(self, target: str) -> dict[str, Any] | None:
        t = REFERENCE_BASELINES.c
        rows = self._read(sa.select(t.baseline_ms, t.info, t.created_at).where(t.target == target))
        if not rows:
            return None
        return {**json.loads(rows[0][1]), "baseline_ms": rows[0][0], "created_at": rows[0][2]}

    def put_reference_baseline(self, target: str, info: dict[str, Any]) -> None:
        self._upsert(REFERENCE_BASELINES, {"target": target, "baseline_ms": float(info["baseline_ms"]),
                                           "info": json.dumps(info), "created_at": _now()})

    def __len__(self) -> int:
        return int(self._read(sa.select(sa.func.count()).select_from(MEASUREMENTS))[0][0])

    def dataframe(self, kind: str | None = None, backend: str | None = None) -> pd.DataFrame:
        """Every measurement as a row, in the order written (SQLite: by rowid; PostgreSQL, where
        rows have no such order: by key within a second): spec, fingerprint and protocol as
        parsed dicts, samples as lists."""
        t = MEASUREMENTS.c
        query = sa.select(MEASUREMENTS).order_by(t.created_at, sa.literal_column("rowid") if self.sqlite else t.key)
        if kind:
            query = query.where(t.kind == kind)
        if backend:
            query = query.where(t.backend == backend)
        rows = self._read(query)
        df = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in MEASUREMENTS.columns])
        for col in ("spec", "fingerprint", "protocol", "samples"):
            df[col] = df[col].map(lambda text: parse_json(text, f"a {col} column of measurement store {self.path}"))
        df["noisy"] = df["noisy"].astype(bool)
        for col in ("flags", "detail"):
            df[col] = df[col].map(lambda text: parse_json(text, f"a {col} column of measurement store {self.path}"))
        return df


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
