"""A search's run directory: what it was asked, what it did each epoch, where to resume.

    config.json      the full configuration (a resumed run must be given the same one)
    log.jsonl        one JSON record per epoch, appended as the run goes
    checkpoint.pt    state dicts, optimisers and RNG states, replaced atomically each epoch;
                     only tensors and plain containers, read back with weights_only=True
    final_arch.json  the final architecture
    summary.json     target, predicted and measured latency, errors
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError, first_line
from hwnas.jsonutil import atomic_path, read_json, read_jsonl, write_json, write_text
from hwnas.locks import FileLock


def read_log_for_resume(path: Path, what: str, repair: bool) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        return read_jsonl(path, what, repair)
    except HwnasError as e:
        raise HwnasError(f"{e}; resuming would lose it: give --repair to rebuild the run from its checkpoint "
                         "and valid records, or use another --out") from None


class RunDir:
    """Held by one process at a time: `start` takes the directory's lock until `close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise HwnasError(f"run directory {self.path} is a file")
        self.lock = FileLock(self.path / ".lock")

    config_path = property(lambda self: self.path / "config.json")
    log_path = property(lambda self: self.path / "log.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    final_arch_path = property(lambda self: self.path / "final_arch.json")
    summary_path = property(lambda self: self.path / "summary.json")

    def start(self, config: dict[str, Any], added: dict[str, Any] | None = None) -> bool:
        """Lock the directory, then write the config of a new run or check it against the run
        being resumed. Returns True when there is a checkpoint to resume from.

        `added`: options added after older runs were written, each with what an older config
        means by lacking it; a resumed config that lacks one matches a new one holding that value."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HwnasError(f"cannot create run directory {self.path}: {e.strerror or e}") from None
        if not self.lock.acquire(blocking=False):
            raise HwnasError(f"run directory {self.path} is in use by another hwnas process; wait for it or use another --out")
        for stale in self.path.glob(".*.tmp"):  # left by a writer killed mid-write; the lock says none is running
            stale.unlink(missing_ok=True)
        try:
            if self.config_path.exists():
                old = read_json(self.config_path, "run config")
                # JSON round trip so tuples and lists compare equal.
                new, added = json.loads(json.dumps(config)), json.loads(json.dumps(added or {}))
                if isinstance(old, dict):
                    old = {**{k: v for k, v in added.items() if k in new}, **old}
                if old != new:
                    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) if isinstance(old, dict) else ["all"]
                    raise HwnasError(
                        f"{self.path} holds a run with a different configuration ({', '.join(diff)} differ); "
                        "use another --out directory"
                    )
            else:
                write_json(self.config_path, config)
        except BaseException:
            self.close()
            raise
        return self.checkpoint_path.exists()

    def close(self) -> None:
        self.lock.release()

    # --- per-epoch log ------------------------------------------------------------------------

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_log(self, repair: bool = False) -> list[dict[str, Any]]:
        return read_jsonl(self.log_path, "run log", repair)[0]

    def resume_log(self, epochs_done: int, repair: bool = False, echo=lambda s: None) -> None:
        """Check the log against the checkpoint (epochs 1..epochs_done each once, in order) before
        anything is written; then drop records past the checkpoint (logged, then interrupted
        before saving). With `repair`, damaged lines and repeated epochs are dropped instead of
        refused, as long as the checkpoint's own epoch keeps its record."""
        records, notes = read_log_for_resume(self.log_path, "run log", repair)
        keep: dict[int, dict[str, Any]] = {}
        for rec in records:
            e = rec["epoch"]
            if e in keep or (not repair and e != len(keep) + 1):
                if not repair:
                    raise HwnasError(f"run log {self.log_path} is damaged: epoch {e} follows epoch {len(keep)}; "
                                     "give --repair to keep each epoch's first record, or use another --out")
                notes.append(f"dropped a repeated or out-of-order record of epoch {e}")
                continue
            keep[e] = rec
        have = sorted(e for e in keep if e <= epochs_done)
        missing = [e for e in range(1, epochs_done + 1) if e not in keep]
        # A record is appended before its checkpoint is saved: the log runs at most one epoch ahead.
        ahead = [e for e in keep if e > epochs_done + 1]
        if ahead and not repair:
            raise HwnasError(f"run log {self.log_path} holds epoch {max(ahead)} but the checkpoint is at epoch "
                             f"{epochs_done}: the checkpoint is older than the log or lost; give --repair to drop the "
                             "later epochs, or use another --out")
        if ahead:
            notes.append(f"epochs {', '.join(map(str, sorted(ahead)))} are past the checkpoint (dropped)")
        if missing and not repair:
            raise HwnasError(f"run log {self.log_path} holds {len(have)} of the {epochs_done} epochs of the checkpoint "
                             f"(epoch {missing[0]} is missing); give --repair to rebuild it, or use another --out")
        if epochs_done and epochs_done not in keep:
            raise HwnasError(f"cannot repair {self.path}: the record of epoch {epochs_done}, the checkpoint's, is lost; "
                             "use another --out")
        if missing:
            notes.append(f"epochs {', '.join(map(str, missing))} have no record (lost)")
        for note in notes:
            echo(f"hwnas: warning: repairing {self.path}: {note}")
        kept = [keep[e] for e in have]
        if self.log_path.exists():
            write_text(self.log_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    # --- checkpoint ---------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        with atomic_path(self.checkpoint_path) as tmp:  # a crash leaves the previous checkpoint
            torch.save(state, tmp)

    def load_checkpoint(self) -> dict[str, Any]:
        try:
            ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise HwnasError(f"cannot read checkpoint {self.checkpoint_path}: {first_line(e)}") from None
        if not isinstance(ck, dict) or isinstance(ck.get("epoch"), bool) or not isinstance(ck.get("epoch"), int) \
                or ck["epoch"] < 0:
            raise HwnasError(f"checkpoint {self.checkpoint_path} is not a checkpoint of hwnas (no epoch)")
        return ck

    # --- results ------------------------------------------------------------------------------

    def write_final_arch(self, arch_json: dict[str, Any]) -> None:
        write_json(self.final_arch_path, arch_json)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary_path, summary)


def snapshot(epoch: int, stateful: dict[str, Any], generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """A checkpoint of modules and optimisers (by their state dicts), generators and torch's RNG."""
    return {
        "epoch": epoch,
        **{name: obj.state_dict() for name, obj in stateful.items()},
        **{name: g.get_state() for name, g in generators.items()},
        "torch_rng": torch.get_rng_state(),
    }


def restore_snapshot(ck: dict[str, Any], stateful: dict[str, Any], generators: dict[str, torch.Generator]) -> int:
    """Load a `snapshot` back into the same objects; returns its epoch."""
    try:
        for name, obj in stateful.items():
            obj.load_state_dict(ck[name])
        for name, g in generators.items():
            g.set_state(ck[name])
        torch.set_rng_state(ck["torch_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise HwnasError(f"checkpoint does not fit this run ({type(e).__name__}: {first_line(e)})") from None
    return int(ck["epoch"])
