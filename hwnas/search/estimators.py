"""How a discrete search scores an architecture's accuracy (ModularNAS's estimators).

  scratch  each architecture trained from scratch for a few epochs (hwnas.search.train.train_arch);
           its search-val accuracy
  spos     Single Path One-Shot (Guo et al., 2020): one supernet holds every candidate of every
           slot; it is trained once with a uniformly sampled single path per step, then each
           architecture is scored with the inherited weights after its BatchNorm statistics are
           recalibrated on training batches (no retraining). The trained supernet is kept in
           the run directory (a state dict read back with weights_only=True), so a resumed
           search does not train it again.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hwnas.errors import HwnasError
from hwnas.jsonutil import atomic_path
from hwnas.search.train import deterministic_training, evaluate, recalibrate_bn, train_arch
from hwnas.spaces.slots import SlotSpace, _set_module


class ScratchEstimator:
    name = "scratch"

    def __init__(self, space: SlotSpace, data, epochs: int = 2, batch_size: int = 64, lr: float = 0.05,
                 weight_decay: float = 4e-5, seed: int = 0, threads: int = 1):
        self.space, self.data = space, data
        self.kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, threads=threads)

    def prepare(self, run_dir: Path | None = None, echo=lambda s: None) -> None:
        pass

    def accuracy(self, arch) -> float:
        return float(train_arch(self.space, arch, self.data, show_progress=False, **self.kw)["val_acc"])


class Choice(nn.Module):
    """All candidates of one slot; `active` names the one the forward pass takes."""

    def __init__(self, ops: dict[str, nn.Module]):
        super().__init__()
        self.ops = nn.ModuleDict(ops)
        self.active = next(iter(ops))

    def forward(self, x):
        return self.ops[self.active](x)


class Supernet(nn.Module):
    def __init__(self, space: SlotSpace):
        super().__init__()
        self.space = space
        self.net = copy.deepcopy(space._template)
        self.choices: list[Choice] = []
        for slot in space.slots:
            choice = Choice({c: space.make_candidate(slot, c) for c in slot.candidates})
            _set_module(self.net, slot.name, choice)
            self.choices.append(choice)

    def set_path(self, arch) -> None:
        for choice, name in zip(self.choices, self.space.validate(arch).choices):
            choice.active = name

    def forward(self, x):
        return self.net(x)


RECALIBRATION_BATCHES = 8  # SPOS recalibrates on a few thousand ImageNet images; here 8 batches (512 at 64)


class SPOSEstimator:
    name = "spos"

    def __init__(self, space: SlotSpace, data, epochs: int = 3, batch_size: int = 64, lr: float = 0.05,
                 weight_decay: float = 4e-5, seed: int = 0, threads: int = 1):
        if space.num_classes != data.num_classes:
            raise HwnasError(f"space has {space.num_classes} classes but the data has {data.num_classes}")
        self.space, self.data = space, data
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.seed, self.threads = seed, threads
        with deterministic_training(threads, seed):
            self.supernet = Supernet(space)

    def train(self, show_progress: bool = True) -> list[dict[str, float]]:
        """Uniform single-path training: each step one architecture drawn uniformly, SGD on it."""

        sp, data = self.space, self.data
        rng = np.random.default_rng(self.seed)
        history = []
        with deterministic_training(self.threads, self.seed):
            net = self.supernet.train()
            opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(self.seed)
            steps = math.ceil(data.size("train") / self.batch_size)
            bar = tqdm(total=self.epochs * steps, desc="supernet", unit="step", file=sys.stderr,
                       disable=not show_progress, dynamic_ncols=True)
            for epoch in range(self.epochs):
                total, n = 0.0, 0
                for step, (x, y) in enumerate(data.batches("train", self.batch_size, sp.resolution, shuffle=True, generator=gen)):
                    t = epoch * steps + step
                    for group in opt.param_groups:
                        group["lr"] = 0.5 * self.lr * (1 + math.cos(math.pi * t / (self.epochs * steps)))
                    net.set_path(sp.sample(rng))
                    loss = F.cross_entropy(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + loss.item() * y.numel(), n + y.numel()
                    bar.update(1)
                history.append({"epoch": epoch + 1, "train_loss": total / n})
            bar.close()
        return history

    def prepare(self, run_dir: Path | None = None, echo=lambda s: None) -> None:
        """Train the supernet, or load the one trained for this run."""
        path = Path(run_dir) / "supernet.pt" if run_dir is not None else None
        if path is not None and path.exists():
            try:
                self.supernet.load_state_dict(torch.load(path, weights_only=True))
                return
            except Exception as e:
                raise HwnasError(f"{path} is not this search's supernet ({type(e).__name__}); delete it to retrain") from None
        echo(f"training the SPOS supernet ({self.epochs} epochs, uniform single paths)")
        self.train()
        if path is not None:
            with atomic_path(path) as tmp:
                torch.save(self.supernet.state_dict(), tmp)

    def accuracy(self, arch, split: str = "val") -> float:
        """Inherited weights, BatchNorm recalibrated on the training batches for this path."""
        with deterministic_training(self.threads, self.seed):
            self.supernet.set_path(arch)
            recalibrate_bn(self.supernet, self.data, self.space.resolution, self.batch_size, RECALIBRATION_BATCHES)
            return float(evaluate(self.supernet, self.data, split, self.space.resolution)[1])


ESTIMATORS = {"spos": SPOSEstimator, "scratch": ScratchEstimator}


def make_estimator(name: str, space: SlotSpace, data, **options: Any):
    if name not in ESTIMATORS:
        raise HwnasError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name](space, data, **options)
