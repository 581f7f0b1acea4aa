"""Fuzz properties over the CLI's inputs and every file reader, shared by tests/fuzz (bounded, in
CI) and benchmarks/fuzz.py (thousands of cases).

The property: exit 0 with a sane result, or exit 2 with one `hwnas: error:` line. Never a
traceback, never a NaN or a non-positive latency, never a changed run directory after a
refused resume, never a lost epoch after an accepted one. `STATS` counts what each case did.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import traceback
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

STATS: Counter = Counter()  # cases, exit_0, exit_2, tracebacks, nan_or_negative, lost_records, ...
TINY = ["--space", "tfnas", "--resolution", "32", "--width-mult", "0.25", "--classes", "10"]


def examples(n: int, cap: int | None = None) -> int:
    """Examples per property: n in CI, n x HWNAS_FUZZ_SCALE (at most `cap`) in the benchmark."""
    scaled = max(1, int(n * float(os.environ.get("HWNAS_FUZZ_SCALE", "1"))))
    return min(scaled, max(n, cap)) if cap else scaled


# --- outcomes -----------------------------------------------------------------------------------

NAN_OR_INF = re.compile(r"(?<![\w.])-?(nan|inf(inity)?)(?![\w])", re.IGNORECASE)
NEGATIVE_MS = re.compile(r'(_ms"?\s*[:=]\s*|predicted |measured )(-\d|0(\.0*)?(?![\d.]))')


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`hwnas ARGS` in this process, output captured; an exception escaping main is a traceback."""
    from hwnas.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main.main(args)
        except BaseException:  # noqa: BLE001 - anything escaping main is what a user would see as a traceback
            code = -1
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue()


def check_cli(args, code: int, out: str, err: str) -> None:
    """Assert the property for one CLI run, counting its outcome."""
    STATS["cases"] += 1
    if "Traceback" in err or code == -1:
        STATS["tracebacks"] += 1
        raise AssertionError(f"traceback for {args!r}:\n{err[-3000:]}")
    assert code in (0, 2), (args, code, err[-2000:])
    STATS[f"exit_{code}"] += 1
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("hwnas: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], (args, err[-2000:])
        assert all(line.startswith(("hwnas: error: ", "hwnas: warning: ")) for line in lines), (args, err[-2000:])
    else:
        check_sane_text(args, out)


def check_sane_text(what, text: str) -> None:
    if NAN_OR_INF.search(text) or NEGATIVE_MS.search(text):
        STATS["nan_or_negative"] += 1
        raise AssertionError(f"NaN, infinity or non-positive latency in the output of {what!r}:\n{text[-2000:]}")


def check_latency(what, value) -> None:
    if not (isinstance(value, float) and np.isfinite(value) and 0 < value <= 1e6):
        STATS["nan_or_negative"] += 1
        raise AssertionError(f"{what}: {value!r} is not a latency")


def refused(fn, *args, **kwargs):
    """Run a file reader: (True, None) when it refuses with HwnasError, else (False, its result).
    Any other exception propagates: that is a bug (a traceback for the user)."""
    from hwnas.errors import HwnasError

    try:
        result = fn(*args, **kwargs)
    except HwnasError as e:
        assert "\n" not in str(e), str(e)
        STATS["exit_2"] += 1
        return True, None
    except BaseException:
        STATS["tracebacks"] += 1
        raise
    STATS["exit_0"] += 1
    return False, result


# --- values -------------------------------------------------------------------------------------

NASTY_TEXT = ["nan", "NaN", "inf", "-inf", "-1", "0", "-0", "1", "2", "0.5", "1e308", "-1e308", "1e-320", "2000000000",
              "4294967295", "4294967296", "-4294967296", "", " ", "0x10", "1_000", "1e3", "abc", "--help", "9" * 5000,
              "-" + "9" * 40, "3.000000000000000001", "\u0661"]
NUMBER_TEXT = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
)
RAW = "\u0000RAW\u0000"  # stands for raw JSON text that json.dumps cannot write (a huge integer, deep nesting)
NASTY_JSON = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1, 0, -0.75, 1e308, -1e308, 5e-324, 2**63, True, None,
                     "", "1", [], {}, [[]], {"epoch": 1}]),
    st.integers(), st.floats(), st.text(max_size=6),
    st.sampled_from(["9" * 5000, "[" * 100_000 + "]" * 100_000, "-" + "9" * 31]).map(lambda raw: (RAW, raw)),
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:40]):  # enough positions; a 1000-entry list need not be walked whole
            yield from _paths(v, (*prefix, i))


def mutate_doc(data, doc) -> str:
    """JSON text of `doc` with one to three values replaced by nasty ones, or keys dropped."""
    doc = json.loads(json.dumps(doc))
    raws = []
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
            continue
        value = data.draw(NASTY_JSON)
        if isinstance(value, tuple):
            raws.append(value[1])
            value = f"{RAW}{len(raws) - 1}"
        parent[path[-1]] = value
    text = json.dumps(doc)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"{RAW}{i}"), raw)
    return text


def mutate_text(data, text: str) -> str:
    """Text-level damage: truncation, a flipped character, inserted garbage, or a duplicated part."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "duplicate", "empty"]))
    n = len(text)
    at = data.draw(st.integers(0, max(n - 1, 0)))
    if kind == "truncate":
        return text[:at]
    if kind == "flip":
        return text[:at] + data.draw(st.sampled_from(['"', "{", "]", ",", "\\", "x", "\n", "\u00ff"])) + text[at + 1:]
    if kind == "insert":
        return text[:at] + data.draw(st.text(max_size=20)) + text[at:]
    if kind == "duplicate":
        return text[:at] + text[at // 2:at] + text[at:]
    return ""


# --- fixtures built once per process --------------------------------------------------------------


@lru_cache(maxsize=None)
def tiny_space():
    from hwnas.spaces.mbconv import Space

    return Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)


@lru_cache(maxsize=None)
def table_doc() -> dict:
    """A lookup table of the tiny space with synthetic entries, on this machine's ort-cpu target."""
    from hwnas.backends import get_backend
    from hwnas.spaces.mbconv import distinct_layers
    from hwnas.surrogates.lut import LookupTable, entry_key

    space = tiny_space()
    points: dict = {}
    for spec in distinct_layers(space, 1, 1):  # every width: aligned and unaligned curves
        points.setdefault(entry_key(spec), {})[spec.mid] = 0.02 + 1e-3 * spec.mid if spec.part == "searchable" else 0.05
    entries = {k: (sorted(p), [p[m] for m in sorted(p)]) for k, p in points.items()}
    return LookupTable(space, 1, "ort-cpu", get_backend("ort-cpu").fingerprint(1), {}, 1, entries).to_json()


@lru_cache(maxsize=None)
def model_doc() -> dict:
    """A linear latency model fitted on 30 subnets the synthetic table times."""
    from hwnas.surrogates.data import Subnets
    from hwnas.surrogates.lut import LookupTable
    from hwnas.surrogates.models import LinearModel

    space, lut = tiny_space(), LookupTable.from_json(table_doc())
    archs = space.random_archs(30, 0)
    subnets = Subnets(archs, np.array([lut.predict(a) for a in archs]))
    return LinearModel.fit(space, subnets, target={"batch": 1, "backend": "ort-cpu", "fingerprint": lut.fingerprint,
                                                   "protocol": {}}).to_json()


@lru_cache(maxsize=None)
def digits():
    from hwnas.data import load_dataset

    return load_dataset("digits", seed=0, limit=40)


def search_config():
    from hwnas.search.tfnas import TFNASConfig

    return TFNASConfig(target_ms=0.6, epochs=3, warmup_epochs=1, batch_size=32, train_resolution=16, measure_every=0)


@lru_cache(maxsize=None)
def finished_run(root: str) -> Path:
    """A finished three-epoch TF-NAS run on the synthetic table (seconds), copied by each case."""
    from hwnas.search.tfnas import search
    from hwnas.surrogates.lut import LookupTable

    path = Path(root) / "finished-run"
    if not (path / "summary.json").exists():
        search(search_config(), digits(), LookupTable.from_json(table_doc()), path, show_progress=False)
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a run directory and its bytes (the lock file is not the run's content)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != ".lock"}


# --- properties ----------------------------------------------------------------------------------


def _json_records(path: Path) -> list | None:
    """Every line of a log as a JSON object, or None where one is not."""
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, RecursionError):  # RecursionError: a line of 100,000 '['
        return None
    return records if all(isinstance(r, dict) for r in records) else None


def resume_property(data, root: Path, case: Path) -> None:
    """Damage a finished run's log or checkpoint; resume it (with or without --repair).
    Refused: the directory is byte for byte as it was. Accepted: each epoch once, in order, every
    valid record kept, and a summary consistent with the log."""
    import torch

    from hwnas.search.tfnas import search
    from hwnas.surrogates.lut import LookupTable

    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(finished_run(str(root)), case)
    original = [json.loads(line) for line in (case / "log.jsonl").read_text().splitlines()]
    target = data.draw(st.sampled_from(["log", "log", "log", "checkpoint", "both"]))
    if target in ("log", "both"):
        lines = (case / "log.jsonl").read_text().splitlines(keepends=True)
        how = data.draw(st.sampled_from(["line", "duplicate", "delete", "swap", "text", "append", "torn"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if how == "line":
            lines[i] = data.draw(st.one_of(
                st.sampled_from(["{}\n", "[]\n", "1\n", '{"epoch": "1"}\n', '{"epoch": 0}\n', "null\n", "\n",
                                 "[" * 100_000 + "\n", '{"epoch": ' + "9" * 5000 + "}\n", "\xff\xfe\n"]),
                st.text(max_size=30).map(lambda t: t.replace("\n", " ") + "\n")))
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "delete":
            del lines[i]
        elif how == "swap" and len(lines) > 1:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif how == "text":
            lines = [mutate_text(data, "".join(lines))]
        elif how == "append":
            lines.append(data.draw(st.text(max_size=30)).replace("\n", " ") + "\n")
        else:  # a record cut short by a crash: no newline after it
            lines.append(lines[-1][: data.draw(st.integers(1, len(lines[-1]) - 1))])
        (case / "log.jsonl").write_text("".join(lines), encoding="utf-8", errors="surrogatepass")
    if target in ("checkpoint", "both"):
        how = data.draw(st.sampled_from(["truncate", "keys", "epoch", "garbage", "delete"]))
        ck = case / "checkpoint.pt"
        if how == "truncate":
            raw = ck.read_bytes()
            ck.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        elif how == "keys":
            torch.save({"epoch": 3}, ck)
        elif how == "epoch":
            state = torch.load(ck, weights_only=True)
            state["epoch"] = data.draw(st.sampled_from([-1, 0, 1, 2, 4, 10**6]))
            torch.save(state, ck)
        elif how == "garbage":
            ck.write_bytes(data.draw(st.binary(max_size=64)))
        else:
            ck.unlink()
    repair = data.draw(st.booleans())
    try:
        ck_epoch = torch.load(case / "checkpoint.pt", weights_only=True)["epoch"]
    except Exception:  # noqa: BLE001 - damaged or deleted on purpose: refused, or (deleted, --repair) started afresh
        ck_epoch = 0
    before = snapshot(case)
    damaged = _json_records(case / "log.jsonl")
    # Known gap: a flipped character inside a string leaves every line valid JSON with the same
    # epochs; without a checksum per record no reader can tell it from the run's own record, and
    # the resume keeps it. Such a case is counted, not judged, below.
    invisible = (damaged is not None and damaged != original
                 and [r.get("epoch") for r in damaged] == [r["epoch"] for r in original])
    lut = LookupTable.from_json(table_doc())
    was_refused, summary = refused(search, search_config(), digits(), lut, case, show_progress=False, repair=repair)
    STATS["cases"] += 1
    if was_refused:
        if snapshot(case) != before:
            STATS["lost_records"] += 1
            raise AssertionError(f"a refused resume changed {case}")
        return
    log = [json.loads(line) for line in (case / "log.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in log]
    if epochs != sorted(set(epochs)):
        STATS["lost_records"] += 1
        raise AssertionError(f"epochs {epochs} after resuming")
    if not repair and epochs != [1, 2, 3]:
        STATS["lost_records"] += 1
        raise AssertionError(f"a resume without --repair left epochs {epochs}")
    for rec in log:  # up to the checkpoint, a kept record is the run's own, unchanged
        if rec["epoch"] <= ck_epoch and rec != original[rec["epoch"] - 1]:
            if invisible:
                STATS["invisible_damage"] += 1
                continue
            STATS["lost_records"] += 1
            raise AssertionError(f"the record of epoch {rec['epoch']} changed on resuming")
    check_latency("predicted_ms", summary["predicted_ms"])
    assert summary["arch_hash"] == json.loads((case / "summary.json").read_text())["arch_hash"]


def check_store_row(data, path: Path) -> None:
    """Damage a stored measurement's columns or the schema version; reading is refused or sane."""
    from hwnas.backends import Measurement, summarize
    from hwnas.store import Store, measurement_key

    path.unlink(missing_ok=True)
    key = measurement_key("layer", {"c": 8}, {"backend": "ort-cpu"}, {"min_runs": 3})
    with Store(path) as store:
        store.put(key, "layer", {"c": 8}, Measurement([1.0, 2.0, 3.0], summarize([1.0, 2.0, 3.0]), False, 1.0, 1.0,
                                                      {"backend": "ort-cpu"}, {"min_runs": 3}))
    column = data.draw(st.sampled_from(["samples", "fingerprint", "protocol", "spec", "median_ms", "schema"]))
    value = data.draw(st.one_of(st.sampled_from(["[" * 100_000, "9" * 5000, "{", "", "nan", "NaN", "-1", "abc"]),
                                st.text(max_size=20), st.floats(allow_nan=False), st.integers(-2**63, 2**63 - 1)))  # SQLite stores NaN as NULL
    conn = sqlite3.connect(path)
    with conn:
        if column == "schema":
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (value,))
        else:
            conn.execute(f"UPDATE measurements SET {column}=?", (value,))
    conn.close()

    def read():
        with Store(path) as store:
            got = store.get(key)
            store.dataframe()
            return got

    was_refused, got = refused(read)
    STATS["cases"] += 1
    if not was_refused:
        check_latency("stored median_ms", float(got.stats["median_ms"]))
