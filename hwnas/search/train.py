"""Train a fixed architecture from scratch and report its test accuracy: the yardstick for
comparing a searched architecture with random ones of the same latency."""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import Arch, Space
from hwnas.spaces.mbconv_ops import build


def evaluate(net: torch.nn.Module, data, split: str, resolution: int, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `net` on a split, in eval mode."""
    net.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in data.batches(split, batch_size, resolution):
            logits = net(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += y.numel()
    return loss / n, correct / n


def recalibrate_bn(net: torch.nn.Module, data, resolution: int, batch_size: int = 256,
                   max_batches: int | None = None) -> None:
    """Re-estimate BatchNorm statistics as exact averages over search-train (its first
    `max_batches` batches where given) with the final weights: running averages lag far behind
    weights that change fast in a short run."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(data.batches("train", batch_size, resolution)):
            if max_batches is not None and i >= max_batches:
                break
            net(x)
    for bn in bns:
        bn.momentum = 0.1


def _set_deterministic(mode: bool) -> None:
    """torch.use_deterministic_algorithms also sets the compiler's flag, and importing the compiler
    (torch._inductor) takes ~2.5 s in every process that trains. hwnas never compiles, so only the
    eager flag is set, unless the compiler is already loaded."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode)
    else:
        torch._C._set_deterministic_algorithms(mode)


@contextmanager
def deterministic_training(threads: int, seed: int):
    """Deterministic torch algorithms, `threads` intra-op threads (one: no spin-wait collapse on
    shared cores) and the seed set, for the block; the caller's settings come back after it."""
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    _set_deterministic(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        _set_deterministic(was_deterministic)
        torch.set_num_threads(was_threads)


def train_arch(
    space: Space,
    arch: Arch | dict,
    data,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 4e-5,
    seed: int = 0,
    threads: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    """SGD (momentum 0.9, cosine to zero) on search-train; val accuracy per epoch; test at the end.

    `space` is at the training resolution with the data's number of classes.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise HwnasError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise HwnasError(f"batch size must be an integer >= 2, got {batch_size!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise HwnasError(f"threads must be an integer in [1, 256], got {threads!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise HwnasError(f"learning rate must be positive, got {lr!r}")
    if space.num_classes != data.num_classes:
        raise HwnasError(f"space has {space.num_classes} classes but the data has {data.num_classes}")
    arch = space.validate(arch)

    with deterministic_training(threads, seed):
        net = space.build(arch).train() if hasattr(space, "references") else build(space, arch)  # darts builds its own
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
        steps = math.ceil(data.size("train") / batch_size)
        history, started = [], time.monotonic()
        bar = tqdm(total=epochs * steps, desc="train", unit="step", file=sys.stderr, disable=not show_progress,
                   dynamic_ncols=True)
        for epoch in range(epochs):
            net.train()
            total, correct, n = 0.0, 0, 0
            for step, (x, y) in enumerate(data.batches("train", batch_size, space.resolution, shuffle=True, generator=gen)):
                t = epoch * steps + step
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * t / (epochs * steps)))
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * y.numel()
                correct += int((logits.argmax(1) == y).sum())
                n += y.numel()
                bar.update(1)
            recalibrate_bn(net, data, space.resolution)
            val_loss, val_acc = evaluate(net, data, "val", space.resolution)
            history.append({"epoch": epoch + 1, "train_loss": total / n, "train_acc": correct / n,
                            "val_loss": val_loss, "val_acc": val_acc})
            bar.set_postfix(val_acc=f"{val_acc:.3f}")
        bar.close()
        test_loss, test_acc = evaluate(net, data, "test", space.resolution)
    return {
        "arch": arch.to_json(),
        "arch_hash": arch.hash,
        "space": space.config,
        "data": data.name,
        "data_sizes": {s: data.size(s) for s in ("train", "val", "test")},
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "threads": threads,
        "params_m": space.params(arch) / 1e6,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "val_acc": history[-1]["val_acc"],
        "history": history,
        "seconds": round(time.monotonic() - started, 2),
    }
