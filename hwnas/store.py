"""The measurement store: SQLite, one row per (what was measured, target, protocol).

Each measurement is committed as it completes (WAL journal), and each of its k processes
before that (`replicates`), so a crash loses at most the process in flight, and the same spec
on the same target is measured once. `reference_baselines` holds the reference model's baseline per
target. A version-1 store (one process per measurement, no reference) is upgraded in place
on open: its rows are kept and marked single-process.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.errors import HwnasError
from hwnas.jsonutil import canonical_json, content_hash, parse_json
from hwnas.profilers.protocol import Measurement
from hwnas.validate import check_latency

SCHEMA_VERSION = 2
# Added in version 2, with what a version-1 row reads as: one process, no reference.
V2_COLUMNS = (
    ("processes", "INTEGER NOT NULL DEFAULT 1"),
    ("raw_median_ms", "REAL"),
    ("ci_low_ms", "REAL"),
    ("ci_high_ms", "REAL"),
    ("reference_ratio", "REAL"),
    ("flags", "TEXT NOT NULL DEFAULT '[\"single-process\"]'"),
    ("isolation", "TEXT NOT NULL DEFAULT ''"),
    ("detail", "TEXT NOT NULL DEFAULT '{}'"),  # JSON: stats beyond the columns, blocks, per-process results
)
STAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "iqr_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "cov", "n")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- layer | arch | layers | onnx
    spec_hash TEXT NOT NULL,
    spec TEXT NOT NULL,          -- JSON of what was measured
    backend TEXT NOT NULL,
    fingerprint TEXT NOT NULL,   -- JSON of the target
    protocol TEXT NOT NULL,      -- JSON of the measurement protocol
    {", ".join(f"{c} {'INTEGER' if c == 'n' else 'REAL'} NOT NULL" for c in STAT_COLUMNS)},
    noisy INTEGER NOT NULL,
    session_ms REAL NOT NULL,
    first_run_ms REAL NOT NULL,
    samples TEXT NOT NULL,       -- JSON list of every timed sample, ms
    created_at TEXT NOT NULL,
    {", ".join(f"{c} {t}" for c, t in V2_COLUMNS)}
);
CREATE INDEX IF NOT EXISTS measurements_spec ON measurements (kind, spec_hash);
CREATE TABLE IF NOT EXISTS replicates (
    key TEXT NOT NULL, idx INTEGER NOT NULL, retries INTEGER NOT NULL,
    measurement TEXT NOT NULL,   -- JSON of one process's Measurement
    created_at TEXT NOT NULL, PRIMARY KEY (key, idx)
);
CREATE TABLE IF NOT EXISTS reference_baselines (target TEXT PRIMARY KEY, baseline_ms REAL NOT NULL, info TEXT NOT NULL,
                                       created_at TEXT NOT NULL);
"""


def default_db_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("HWNAS_DB") or Path(user_cache_dir("hwnas")) / "measurements.sqlite")


def measurement_key(kind: str, spec: dict[str, Any], fingerprint: dict[str, Any], protocol: dict[str, Any]) -> str:
    return content_hash({"kind": kind, "spec": spec, "target": fingerprint, "protocol": protocol}, length=24)


class Store:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_db_path()
        if self.path.is_dir():
            raise HwnasError(f"measurement store {self.path} is a directory; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self._check_schema()
        except sqlite3.DatabaseError as e:
            raise HwnasError(f"cannot use measurement store {self.path}: {e}") from None
        except OSError as e:
            raise HwnasError(f"cannot create measurement store {self.path}: {e.strerror or e}") from None

    def _check_schema(self) -> None:
        # One write transaction from check to creation: a process opening a new store at the same
        # time waits, then finds it complete (not its meta table without a version yet).
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_and_create_schema()
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _check_and_create_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            try:
                found = int(row[0]) if row else None
            except (TypeError, ValueError):
                found = repr(row[0])[:40]  # damaged: reported below as a version this hwnas cannot read
            if found == 1:
                self._upgrade_from_1()
                found = SCHEMA_VERSION
            if found != SCHEMA_VERSION:
                raise HwnasError(
                    f"measurement store {self.path} has schema version {found}; this hwnas reads version "
                    f"{SCHEMA_VERSION}: use another --db"
                )
        elif tables:
            raise HwnasError(f"{self.path} is an SQLite file but not an hwnas measurement store")
        for statement in _SCHEMA.split(";"):  # not executescript: it would commit first
            if statement.strip():
                self.conn.execute(statement)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _upgrade_from_1(self) -> None:
        """Version 1 to 2, inside the schema check's transaction: new columns with defaults that
        mark every old row single-process; nothing is rewritten or lost."""
        for column, decl in V2_COLUMNS:
            self.conn.execute(f"ALTER TABLE measurements ADD COLUMN {column} {decl}")
        self.conn.execute("UPDATE measurements SET raw_median_ms = median_ms")
        self.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, key: str) -> Measurement | None:
        row = self.conn.execute(
            f"SELECT samples, {', '.join(STAT_COLUMNS)}, noisy, session_ms, first_run_ms, fingerprint, protocol, "
            "processes, ci_low_ms, ci_high_ms, reference_ratio, flags, isolation, detail FROM measurements WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        samples, *rest = row
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
        values = (
            key, kind, content_hash(spec), canonical_json(spec), m.fingerprint.get("backend", ""),
            canonical_json(m.fingerprint), canonical_json(m.protocol),
            *(m.stats[c] for c in STAT_COLUMNS),
            int(m.noisy), m.session_ms, m.first_run_ms, json.dumps(m.samples_ms), _now(),
            max(len(m.processes), 1), m.stats.get("raw_median_ms", m.stats["median_ms"]),
            m.ci95_ms[0] if m.ci95_ms else None, m.ci95_ms[1] if m.ci95_ms else None, m.reference_ratio,
            json.dumps(m.flags), m.isolation, json.dumps(detail),
        )
        self._write(f"INSERT OR REPLACE INTO measurements VALUES ({', '.join('?' * len(values))})", values)

    def _write(self, sql: str, values: tuple) -> None:
        try:
            with self.conn:  # one transaction per write: committed as soon as it is measured
                self.conn.execute(sql, values)
        except sqlite3.Error as e:
            raise HwnasError(f"cannot write to measurement store {self.path}: {e}") from None

    # --- one process of a measurement, committed before the measurement is complete ---------------

    def put_replicate(self, key: str, idx: int, m: Measurement, retries: int = 0) -> None:
        self._write("INSERT OR REPLACE INTO replicates VALUES (?, ?, ?, ?, ?)",
                    (key, idx, retries, json.dumps(m.to_json()), _now()))

    def replicates(self, key: str) -> list[Measurement]:
        rows = self.conn.execute("SELECT measurement FROM replicates WHERE key=? ORDER BY idx", (key,)).fetchall()
        return [Measurement.from_json(json.loads(r[0])) for r in rows]

    def replicate_retries(self, key: str) -> int:
        return int(self.conn.execute("SELECT COALESCE(SUM(retries), 0) FROM replicates WHERE key=?", (key,)).fetchone()[0])

    def drop_replicates(self, key: str) -> None:
        self._write("DELETE FROM replicates WHERE key=?", (key,))

    # --- the reference model's baseline per target ---------------------------------------------------

    def reference_baseline(self, target: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT baseline_ms, info, created_at FROM reference_baselines WHERE target=?", (target,)).fetchone()
        if row is None:
            return None
        return {**json.loads(row[1]), "baseline_ms": row[0], "created_at": row[2]}

    def put_reference_baseline(self, target: str, info: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO reference_baselines VALUES (?, ?, ?, ?)",
                    (target, float(info["baseline_ms"]), json.dumps(info), _now()))

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    def dataframe(self, kind: str | None = None, backend: str | None = None) -> pd.DataFrame:
        """Every measurement as a row: spec, fingerprint and protocol as parsed dicts, samples as lists."""
        query, args = "SELECT * FROM measurements WHERE 1=1", []
        if kind:
            query += " AND kind=?"
            args.append(kind)
        if backend:
            query += " AND backend=?"
            args.append(backend)
        df = pd.read_sql_query(query + " ORDER BY created_at, rowid", self.conn, params=args)
        for col in ("spec", "fingerprint", "protocol", "samples"):
            df[col] = df[col].map(lambda text: parse_json(text, f"a {col} column of measurement store {self.path}"))
        df["noisy"] = df["noisy"].astype(bool)
        for col in ("flags", "detail"):
            df[col] = df[col].map(lambda text: parse_json(text, f"a {col} column of measurement store {self.path}"))
        return df


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
