"""Canonical JSON, content hashes and safe JSON file reading (nothing here unpickles)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from platformdirs import user_cache_dir

from hwnas.errors import HwnasError

MAX_JSON_BYTES = 1_000_000  # architecture and config files are small; a larger one is a mistake


def canonical_json(obj: Any) -> str:
    """One byte-exact text per value, so equal values hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


MAX_DEPTH = 64  # our files nest a few levels; deeper is damage or an attack on the parser's recursion
MAX_INT_DIGITS = 30  # no count or size of ours has more digits; a longer integer is not a value of ours
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (the limit is {MAX_INT_DIGITS})")
    return int(text)


def _check_depth(text: str) -> None:
    """Refuse nesting past MAX_DEPTH before parsing, so the parser never recurses that deep."""
    depth = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} deep")
        elif token in "]}":
            depth -= 1


def parse_json(text: str, what: str = "JSON") -> Any:
    """The one guarded JSON parser: bounded depth and integer size; a bad text is one HwnasError.
    `what` names the text in the message (a file, or a file and line)."""
    if not isinstance(text, str):
        raise HwnasError(f"{what} is not JSON text (a {type(text).__name__})")
    try:
        _check_depth(text)
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise HwnasError(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise HwnasError(f"{what} is not valid JSON of hwnas: {e}") from None


def read_text(path: str | Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> str:
    """A text file of at most `max_bytes`; unreadable, too large or not UTF-8 is one HwnasError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise HwnasError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if size > max_bytes:
        raise HwnasError(f"{what} {path} is {size} bytes; the limit is {max_bytes}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HwnasError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None


def read_json(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    return parse_json(read_text(path, what, max_bytes), f"{what} {path}")


MAX_LOG_BYTES = 200_000_000


def read_jsonl(path: str | Path, what: str, repair: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a JSON-lines file we append to, each an object with an integer "epoch".

    A last line without its newline was cut short by a crash while it was appended; it is
    dropped. Any other damaged line is refused, naming the file and line, unless `repair`:
    then it is dropped and described in the returned notes."""
    path = Path(path)
    if not path.exists():
        return [], []
    try:
        if path.stat().st_size > MAX_LOG_BYTES:
            raise HwnasError(f"{what} {path} is {path.stat().st_size} bytes; the limit is {MAX_LOG_BYTES}")
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise HwnasError(f"cannot read {what} {path}: {e.strerror or e}") from None
    records, notes = [], []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        torn = n == len(lines)  # no newline after it
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise HwnasError(f"{what} {path} line {n} is not UTF-8 text") from None
            rec = parse_json(line, f"{what} {path} line {n}")
            if not isinstance(rec, dict) or isinstance(rec.get("epoch"), bool) or not isinstance(rec.get("epoch"), int) \
                    or rec["epoch"] < 1:
                raise HwnasError(f"{what} {path} line {n} is not a record of an epoch")
        except HwnasError:
            if torn:
                break
            if not repair:
                raise
            notes.append(f"dropped line {n} of {path.name}")
            continue
        records.append(rec)
    return records, notes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside `path`, renamed onto it when the block ends without error:
    a crash leaves the old file, and two writers never share a temporary file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise HwnasError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise HwnasError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write atomically (and durably) so a crash never leaves a half-written file behind."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def cache_root() -> Path:
    """Where hwnas caches exports and engines: $HWNAS_CACHE, else the user's cache directory."""

    return Path(os.environ.get("HWNAS_CACHE") or user_cache_dir("hwnas"))
