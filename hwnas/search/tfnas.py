"""TF-NAS (Hu et al., ECCV 2020): bi-sampling, sink-connecting depth and elasticity-scaling,
searched against any differentiable latency model (`hwnas.surrogates.base`).

Bi-level alternation (Eq. 7-8): each step trains the supernet weights on a search-train
batch along two paths, a Gumbel-softmax sample and an op drawn uniformly among the others
(two forwards, one backward), then, past the warm-up, updates alpha and beta on a
search-val batch with cross-entropy + lambda * C(E[LAT]) (Eq. 9). After each epoch past the
warm-up, elasticity-scaling (Algorithm 1) fits the derived architecture's widths to the
target under the latency model and puts them back into the supernet.

Departure from the paper (`TFNASConfig.share_ops`, default True): the ops of a layer share
their convolution weights (Once-for-All style; see `hwnas.search.supernet`). With TF-NAS's
per-op weights the supernet does not learn on small data sets in the few epochs a search
here runs (digits: random-path val accuracy 15% after 12 epochs, against 98% with shared
weights; benchmarks/supernet_trainability.py), so the architecture step would see only
noise in its cross-entropy term. share_ops=False gives the paper's supernet.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hwnas.errors import HwnasError
from hwnas.search.cost import COSTS, relative_cost
from hwnas.search.loop import SearchState, run_epochs
from hwnas.search.rundir import RunDir
from hwnas.search.supernet import Supernet, entropy, sample_paths, straight_through
from hwnas.search.train import deterministic_training
from hwnas.spaces.elastic import elasticity_scale
from hwnas.spaces.mbconv import Arch, Space
from hwnas.validate import is_finite_number as is_num
from hwnas.validate import is_int
from hwnas.validate import require as check


@dataclass(frozen=True)
class TFNASConfig:
    target_ms: float
    epochs: int = 20
    warmup_epochs: int = 5
    batch_size: int = 64
    train_resolution: int = 32  # images fed to the supernet; latency is the model's (deployment) resolution
    lr: float = 0.05  # weights: SGD, cosine to zero over all steps
    momentum: float = 0.9
    weight_decay: float = 1e-5
    arch_lr: float = 0.1  # alpha, beta: Adam; the paper's 0.01 barely moves them in the ~150 steps of a minutes-long run
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 5e-4
    tau: float = 5.0
    tau_decay: float = 0.7  # per epoch after the warm-up: the paper's 0.96 over 80 epochs (5.0 -> 0.19) compressed to ~8
    lam: float = 0.1
    cost: str = "hinge"  # hinge: max(LAT/T - 1, 0) (paper, Eq. 9); abs: |LAT/T - 1| (authors' code)
    grad_clip: float = 5.0
    seed: int = 0
    measure_every: int = 0  # measure the derived architecture every K epochs (0: only at the end)
    final_sessions: int = 3  # the final architecture's latency: the median of this many fresh sessions
    train_threads: int = 1  # torch intra-op threads; 1 avoids spin-wait collapse on shared cores
    share_ops: bool = True  # ops of a layer share conv weights (Once-for-All style, not TF-NAS's per-op weights)
    elastic_depth: bool = True  # elasticity-scaling may change depth where the width bound stops it (not in the paper)
    width_align: int = 4  # elasticity-scaled widths are multiples of this (see `elasticity_scale`)

    def __post_init__(self):
        check(is_num(self.target_ms) and self.target_ms > 0, f"target latency must be a positive number of ms, got {self.target_ms!r}")
        check(is_int(self.epochs) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs!r}")
        check(is_int(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
              f"warm-up epochs must be in [0, epochs - 1] = [0, {self.epochs - 1}], got {self.warmup_epochs!r}")
        check(is_int(self.batch_size) and self.batch_size >= 2, f"batch size must be an integer >= 2, got {self.batch_size!r}")
        check(is_int(self.train_resolution) and 16 <= self.train_resolution <= 1024,
              f"training resolution must be an integer in [16, 1024], got {self.train_resolution!r}")
        for name in ("lr", "arch_lr", "tau"):
            check(is_num(getattr(self, name)) and getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("weight_decay", "arch_weight_decay", "lam", "grad_clip", "momentum"):
            check(is_num(getattr(self, name)) and getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")
        check(is_num(self.tau_decay) and 0 < self.tau_decay <= 1, f"tau decay must be in (0, 1], got {self.tau_decay!r}")
        check(self.cost in COSTS, f"unknown latency cost {self.cost!r}; known: {', '.join(COSTS)}")
        check(is_int(self.measure_every) and self.measure_every >= 0, f"measure-every must be an integer >= 0, got {self.measure_every!r}")
        check(is_int(self.final_sessions) and 1 <= self.final_sessions <= 100,
              f"final sessions must be an integer in [1, 100], got {self.final_sessions!r}")
        check(is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        check(is_int(self.width_align) and 1 <= self.width_align <= 64, f"width alignment must be an integer in [1, 64], got {self.width_align!r}")
        for name in ("share_ops", "elastic_depth"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check(is_int(self.train_threads) and 1 <= self.train_threads <= 256,
              f"training threads must be an integer in [1, 256], got {self.train_threads!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch_betas"] = list(self.arch_betas)
        return d

    def temperature(self, epoch: int) -> float:
        return self.tau * self.tau_decay ** max(0, epoch - self.warmup_epochs)


# --- the search ----------------------------------------------------------------------------------


def check_model(model, num_classes: int) -> Space:
    """The latency model's space is the deployment space: tfnas-like, elastic, the data's classes."""
    space = getattr(model, "space", None)
    if not isinstance(space, Space) or not callable(getattr(model, "soft", None)) or not callable(getattr(model, "predict", None)):
        raise HwnasError("the latency model must be differentiable: predict(arch), soft(...) and a .space")
    if not space.definition.elastic or space.definition.skip_op:
        raise HwnasError(f"TF-NAS searches an elastic space without skip ops (tfnas), not {space.name}")
    if space.num_classes != num_classes:
        raise HwnasError(f"the latency model is for {space.num_classes} classes but the data has {num_classes}; "
                         "rebuild the lookup table with the data's number of classes")
    return space


def search(
    config: TFNASConfig,
    data,
    model,
    out,
    measurer=None,
    measure_batch: int = 1,
    run_info: dict[str, Any] | None = None,
    show_progress: bool = True,
    stop_after_epoch: int | None = None,
    echo: Callable[[str], None] = lambda s: None,
    repair: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) a TF-NAS search into run directory `out`; returns the summary.

    model: a differentiable latency model whose .space is the deployment space.
    measurer: a `hwnas.measure.Measurer` for true latencies (every measure_every epochs and
    at the end), or None. stop_after_epoch: return None after checkpointing that epoch, as
    if interrupted. repair: rebuild a damaged log from its valid records and the checkpoint.
    """
    deploy = check_model(model, data.num_classes)
    train_space = Space(deploy.name, config.train_resolution, deploy.width_mult, deploy.num_classes)
    run = RunDir(out)
    full_config = {
        "method": "tfnas",
        **config.to_json(),
        "deploy_space": deploy.config,
        "train_space": train_space.config,
        "latency_model": getattr(model, "name", type(model).__name__),
        "data": data.name,
        "data_sizes": {s: data.size(s) for s in ("train", "val", "test")},
        "measure_batch": measure_batch,
        **(run_info or {}),
    }
    resume = run.start(full_config)
    try:
        return _search(run, resume, config, data, model, deploy, train_space, measurer, measure_batch, show_progress,
                       stop_after_epoch, echo, repair)
    finally:
        run.close()


def _search(run, resume, config, data, model, deploy, train_space, measurer, measure_batch, show_progress,
            stop_after_epoch, echo, repair):
    with deterministic_training(config.train_threads, config.seed):  # the seed: weight initialisation
        net = Supernet(train_space, share_ops=config.share_ops)
        state = SearchState(
            supernet=net,
            opt_w=torch.optim.SGD(net.weight_parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay),
            opt_a=torch.optim.Adam(net.arch_parameters(), lr=config.arch_lr, betas=tuple(config.arch_betas),
                                   weight_decay=config.arch_weight_decay),
            data_gen=torch.Generator().manual_seed(config.seed),
            sample_gen=torch.Generator().manual_seed(config.seed + 1),
        )
        state.arch, state.scale = None, {}  # the epoch's elasticity-scaled architecture (not checkpointed: logged)
        steps_per_epoch = math.ceil(data.size("train") / config.batch_size)

        def after_epoch() -> dict[str, Any]:
            arch, latency = _after_epoch(state, config, model)
            record = dict(arch=arch.to_json(), arch_hash=arch.hash, depths=list(arch.depths), predicted_ms=latency,
                          **state.scale)
            if measurer is not None and config.measure_every and state.epoch % config.measure_every == 0:
                record["measured_ms"] = _measure(measurer, deploy, arch, measure_batch)
            return record

        def line(record: dict[str, Any]) -> str:
            return (f"train acc {record['train_acc']:.3f}, val acc {record.get('val_acc', float('nan')):.3f}, "
                    f"predicted {record['predicted_ms']:.4g} ms (target {config.target_ms:.4g})"
                    + "".join(f"; {c}" for c in state.scale.get("depth_changes", []))
                    + (f"; width bound: {state.scale['width_bound_note']}" if state.scale.get("width_bound") else ""))

        if not run_epochs(run, resume, state, config.epochs,
                          lambda: _epoch(state, config, data, model, steps_per_epoch, show_progress), after_epoch, line,
                          echo, stop_after_epoch, repair):
            return None
        if state.arch is None:  # resumed a finished run: its architecture is the last epoch's, as logged
            # (not re-derived from the supernet: depth changes by elasticity-scaling live only in the log)
            last = run.read_log()[-1]
            state.arch = deploy.validate(last["arch"])
            state.scale = {k: last[k] for k in ("width_bound", "width_bound_note") if k in last}
    return _finish(run, state, config, model, deploy, train_space, measurer, measure_batch)


def _epoch(state: SearchState, cfg: TFNASConfig, data, model, steps_per_epoch: int, show_progress: bool) -> dict[str, Any]:
    net, epoch = state.supernet, state.epoch
    net.train()
    tau = cfg.temperature(epoch)
    search_arch = epoch >= cfg.warmup_epochs
    res, bs = cfg.train_resolution, cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    sums = {k: 0.0 for k in ("train_loss", "train_loss_random", "train_correct", "train_n",
                             "val_loss", "val_correct", "val_n", "lat_soft", "cost")}
    arch_steps = 0

    def val_batches():
        while True:  # search-val is smaller than search-train: cycle through it
            yield from data.batches("val", bs, res, shuffle=True, generator=state.data_gen)

    val_iter = val_batches()

    bar = tqdm(data.batches("train", bs, res, shuffle=True, generator=state.data_gen), total=steps_per_epoch,
               desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", file=sys.stderr, leave=False,
               disable=not show_progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        t = epoch * steps_per_epoch + step
        for group in state.opt_w.param_groups:
            group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * t / total_steps))
        # Weights: two paths (Gumbel argmax, then uniform among the other ops), one backward.
        with torch.no_grad():
            _, first, second = sample_paths([[a.detach() for a in s] for s in net.alphas()], tau, state.sample_gen)
            depth_w = [d.detach() for d in net.depth_weights()]
        state.opt_w.zero_grad(set_to_none=True)
        logits = net(x, first, depth_w)
        loss_g = F.cross_entropy(logits, y)
        loss_r = F.cross_entropy(net(x, second, depth_w), y)
        (loss_g + loss_r).backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
        state.opt_w.step()
        n = y.numel()
        sums["train_loss"] += loss_g.item() * n
        sums["train_loss_random"] += loss_r.item() * n
        sums["train_correct"] += int((logits.argmax(1) == y).sum())
        sums["train_n"] += n
        if not search_arch:
            continue
        # Architecture: one Gumbel path (straight-through), cross-entropy on search-val + latency cost.
        xv, yv = next(val_iter)
        soft, first, _ = sample_paths(net.alphas(), tau, state.sample_gen)
        scales = [[straight_through(w, k) for w, k in zip(ws, ks)] for ws, ks in zip(soft, first)]
        depth_w = net.depth_weights()
        logits = net(xv, first, depth_w, scales)
        ce = F.cross_entropy(logits, yv)
        lat = model.soft(soft, depth_w, net.mids())
        cost = relative_cost(lat / cfg.target_ms, cfg.cost)  # C(LAT), TF-NAS Eq. 9
        state.opt_a.zero_grad(set_to_none=True)
        (ce + cfg.lam * cost).backward()
        state.opt_a.step()
        with torch.no_grad():  # keep the logits normalised, as the authors' code does
            for p in net.alpha:
                p.copy_(torch.log_softmax(p, 0))
        n = yv.numel()
        sums["val_loss"] += ce.item() * n
        sums["val_correct"] += int((logits.argmax(1) == yv).sum())
        sums["val_n"] += n
        sums["lat_soft"] += lat.item()
        sums["cost"] += cost.item()
        arch_steps += 1
        bar.set_postfix(lat=f"{lat.item():.3g}", tau=f"{tau:.3g}")
    bar.close()
    record = {
        "epoch": epoch + 1,
        "tau": tau,
        "lr": state.opt_w.param_groups[0]["lr"],
        "arch_updates": search_arch,
        "train_loss": sums["train_loss"] / sums["train_n"],
        "train_loss_random": sums["train_loss_random"] / sums["train_n"],
        "train_acc": sums["train_correct"] / sums["train_n"],
        "alpha_entropy": entropy(list(net.alpha)),
        "beta_entropy": entropy([b for b in net.beta if b.numel() > 1]),
        "max_prob": [round(float(torch.softmax(a.detach(), 0).max()), 4) for a in net.alpha],
    }
    if arch_steps:
        record.update(val_loss=sums["val_loss"] / sums["val_n"], val_acc=sums["val_correct"] / sums["val_n"],
                      soft_latency_ms=sums["lat_soft"] / arch_steps, latency_cost=sums["cost"] / arch_steps)
    return record


def _after_epoch(state: SearchState, cfg: TFNASConfig, model) -> tuple[Arch, float]:
    """Derive the seed network; past the warm-up, elasticity-scale it and put it back."""
    arch = model.space.validate(state.supernet.derive().to_json())
    if state.epoch > cfg.warmup_epochs:
        depth = {"full": model.space.validate(state.supernet.derive(full=True).to_json()),
                 "depth_probs": state.supernet.depth_probs()} if cfg.elastic_depth else {}
        result = elasticity_scale(model, arch, cfg.target_ms, align=cfg.width_align, **depth)
        state.supernet.apply_arch(result.arch)
        arch = result.arch
        state.scale = {"seed_predicted_ms": result.seed_latency_ms, "gammas": result.gammas,
                       "width_bound": result.bound, "width_bound_note": result.message,
                       "depth_changes": result.depth_changes}
    state.arch = arch
    return arch, float(model.predict(arch))


def _measure(measurer, space: Space, arch: Arch, batch: int, force: bool = False) -> float:
    return float(measurer.arch(space, arch, batch, force).measurement.stats["median_ms"])


def _finish(run: RunDir, state: SearchState, cfg: TFNASConfig, model, deploy: Space, train_space: Space,
            measurer, measure_batch: int) -> dict[str, Any]:
    arch = state.arch
    predicted = float(model.predict(arch))
    sessions, final = [], None  # one measurement of max(final_sessions, k) fresh processes
    if measurer is not None:
        final = measurer.arch(deploy, arch, measure_batch, force=True, processes=cfg.final_sessions).measurement
        sessions = [p["latency_ms"] for p in final.processes] or [final.stats["median_ms"]]
    measured = final.stats["median_ms"] if final is not None else None
    summary = {
        "method": "tfnas",
        "target_ms": cfg.target_ms,
        "predicted_ms": predicted,
        "measured_ms": measured,
        "measured_sessions_ms": sessions,
        "measured_ci95_ms": final.ci95_ms if final is not None else None,
        "measured_flags": final.flags if final is not None else None,
        "measured_reference_ratio": final.reference_ratio if final is not None else None,
        "lookup_error_pct": None if measured is None else 100.0 * (predicted - measured) / measured,
        "distance_to_target_pct": 100.0 * (predicted - cfg.target_ms) / cfg.target_ms,
        "measured_distance_to_target_pct": None if measured is None else 100.0 * (measured - cfg.target_ms) / cfg.target_ms,
        "deploy_resolution": deploy.resolution,
        "train_resolution": train_space.resolution,
        "width_mult": deploy.width_mult,
        "epochs": state.epoch,
        "arch_hash": arch.hash,
        "depths": list(arch.depths),
        "macs_m": deploy.macs(arch) / 1e6,
        "params_m": deploy.params(arch) / 1e6,
        "width_bound": state.scale.get("width_bound"),
        "width_bound_note": state.scale.get("width_bound_note", ""),
        "latency_model": getattr(model, "name", type(model).__name__),
    }
    run.write_final_arch(arch.to_json())
    run.write_summary(summary)
    return summary
