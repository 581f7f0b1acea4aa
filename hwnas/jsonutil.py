"""Canonical JSON, content hashes and safe JSON file reading (nothing here unpickles)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError

MAX_JSON_BYTES = 1_000_000  # architecture and config files are small; a larger one is a mistake


def canonical_json(obj: Any) -> str:
    """One byte-exact text per value, so equal values hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def read_json(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise HwnasError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if size > max_bytes:
        raise HwnasError(f"{what} {path} is {size} bytes; the limit is {max_bytes}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HwnasError(f"cannot read {what} {path}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HwnasError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write atomically so a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def cache_root() -> Path:
    """Where hwnas caches exports and engines: $HWNAS_CACHE, else the user's cache directory."""
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("HWNAS_CACHE") or user_cache_dir("hwnas"))
