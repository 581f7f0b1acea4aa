"""The epoch loop every supernet search shares (TF-NAS, UNAS, SNAS, EnTranNAS): resume from the
run's checkpoint, check the log against it, then per epoch train, describe the derived
architecture, append the record, save the checkpoint, and stop after an epoch when asked."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from hwnas.search.rundir import RunDir, restore_snapshot, snapshot


class SearchState:
    """A search's modules and optimisers (saved by their state dicts) and generators, each an
    attribute under its checkpoint name, with the number of epochs done."""

    def __init__(self, **parts: Any):
        self.epoch = 0
        self._stateful = {k: v for k, v in parts.items() if not isinstance(v, torch.Generator)}
        self._generators = {k: v for k, v in parts.items() if isinstance(v, torch.Generator)}
        for name, part in parts.items():
            setattr(self, name, part)

    def checkpoint(self) -> dict[str, Any]:
        return snapshot(self.epoch, self._stateful, self._generators)

    def restore(self, ck: dict[str, Any]) -> None:
        self.epoch = restore_snapshot(ck, self._stateful, self._generators)


def run_epochs(run: RunDir, resume: bool, state: SearchState, epochs: int,
               train_epoch: Callable[[], dict[str, Any]], after_epoch: Callable[[], dict[str, Any]],
               line: Callable[[dict[str, Any]], str], echo: Callable[[str], None],
               stop_after_epoch: int | None = None, repair: bool = False,
               other_logs: Callable[[int], Callable[[], None]] | None = None) -> bool:
    """Resume from the run's checkpoint if there is one and check the log against it (with
    `repair`, rebuild a damaged one); `other_logs(epochs_done)` checks a method's own logs first
    and returns what trims them, run once the run log is trimmed too, so a refused resume changes
    nothing. Then per epoch: `train_epoch()` gives the record, `after_epoch()` adds the derived
    architecture's description (after the epoch count moves on), and the record is appended
    before the checkpoint is saved (a crash between the two repeats the epoch). Returns True when
    all `epochs` are done, False when stopped after `stop_after_epoch`."""
    if resume:
        state.restore(run.load_checkpoint())
        echo(f"resuming {run.path} after epoch {state.epoch}/{epochs}")
    trim_others = other_logs(state.epoch) if other_logs is not None else None
    run.resume_log(state.epoch, repair, echo)
    if trim_others is not None:
        trim_others()
    started = time.monotonic()
    while state.epoch < epochs:
        record = train_epoch()
        state.epoch += 1
        record.update(after_epoch())
        record["seconds"] = round(time.monotonic() - started, 2)
        run.append_log(record)
        run.save_checkpoint(state.checkpoint())
        echo(f"epoch {state.epoch}/{epochs}: " + line(record))
        if stop_after_epoch is not None and state.epoch >= stop_after_epoch and state.epoch < epochs:
            return False
    return True
