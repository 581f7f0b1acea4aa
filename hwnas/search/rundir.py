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

from hwnas.errors import HwnasError
from hwnas.jsonutil import read_json, write_json


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise HwnasError(f"run directory {self.path} is a file")

    config_path = property(lambda self: self.path / "config.json")
    log_path = property(lambda self: self.path / "log.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    final_arch_path = property(lambda self: self.path / "final_arch.json")
    summary_path = property(lambda self: self.path / "summary.json")

    def start(self, config: dict[str, Any]) -> bool:
        """Write the config of a new run, or check it against the run being resumed.
        Returns True when there is a checkpoint to resume from."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HwnasError(f"cannot create run directory {self.path}: {e.strerror or e}") from None
        if self.config_path.exists():
            old = read_json(self.config_path, "run config")
            # JSON round trip so tuples and lists compare equal.
            new = json.loads(json.dumps(config))
            if old != new:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise HwnasError(
                    f"{self.path} holds a run with a different configuration ({', '.join(diff)} differ); "
                    "use another --out directory"
                )
        else:
            write_json(self.config_path, config)
        return self.checkpoint_path.exists()

    # --- per-epoch log ------------------------------------------------------------------------

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a crash; everything after it is gone too
        return records

    def truncate_log(self, epochs_done: int) -> None:
        """Drop records of epochs past the checkpoint (logged, then interrupted before saving)."""
        keep = [r for r in self.read_log() if r.get("epoch", 0) <= epochs_done]
        tmp = self.log_path.with_name(self.log_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(self.log_path)

    # --- checkpoint ---------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)  # atomic: a crash leaves the previous checkpoint

    def load_checkpoint(self) -> dict[str, Any]:
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise HwnasError(f"cannot read checkpoint {self.checkpoint_path}: {str(e).splitlines()[0]}") from None

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
    for name, obj in stateful.items():
        obj.load_state_dict(ck[name])
    for name, g in generators.items():
        g.set_state(ck[name])
    torch.set_rng_state(ck["torch_rng"])
    return int(ck["epoch"])
