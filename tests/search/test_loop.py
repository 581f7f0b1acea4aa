"""The epoch loop every supernet search shares: a run stopped, killed between its log and its
checkpoint, or killed before its first checkpoint ends with the log of an uninterrupted run."""

from __future__ import annotations

import json

import torch

from hwnas.search.loop import SearchState, run_epochs
from hwnas.search.rundir import RunDir


def new_state() -> SearchState:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    return SearchState(net=net, opt=torch.optim.SGD(net.parameters(), lr=0.1), gen=torch.Generator().manual_seed(1))


def run(path, epochs=3, stop_after_epoch=None, other_logs=None):
    """A search whose epoch takes one random step from its own generator."""
    rundir = RunDir(path)
    resume = rundir.start({"method": "toy"})
    state = new_state()

    def train_epoch():
        x = torch.randn(8, 3, generator=state.gen)
        state.opt.zero_grad()
        loss = state.net(x).pow(2).mean()
        loss.backward()
        state.opt.step()
        return {"epoch": state.epoch + 1, "loss": round(float(loss.detach()), 6)}

    def after_epoch():
        return {"weight": round(float(state.net.weight.sum()), 6)}

    try:
        done = run_epochs(rundir, resume, state, epochs, train_epoch, after_epoch, lambda r: f"loss {r['loss']}",
                          lambda s: None, stop_after_epoch, other_logs=other_logs)
    finally:
        rundir.close()
    return done, [{k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, (path / "log.jsonl").open())]


def test_stopped_and_killed_runs_end_as_an_uninterrupted_one(tmp_path):
    done, whole = run(tmp_path / "whole")
    assert done and [r["epoch"] for r in whole] == [1, 2, 3]

    part = tmp_path / "part"
    assert run(part, stop_after_epoch=1)[0] is False
    with open(part / "log.jsonl", "a") as f:  # epoch 2 logged, then killed before its checkpoint
        f.write(json.dumps({"epoch": 2, "loss": -1.0, "weight": -1.0}) + "\n")
    trimmed = []
    done, log = run(part, other_logs=lambda epochs_done: lambda: trimmed.append(epochs_done))
    assert done and log == whole and trimmed == [1]


def test_a_run_killed_before_its_first_checkpoint_starts_over_cleanly(tmp_path):
    _, whole = run(tmp_path / "whole")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "log.jsonl").write_text(json.dumps({"epoch": 1, "loss": -1.0, "weight": -1.0}) + "\n")
    assert run(fresh)[1] == whole  # not epoch 1 twice
