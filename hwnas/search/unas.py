"""UNAS (CVPR 2020): a distribution over architectures and the RELAX latency term on the TRUE
measured latency, with a differentiable surrogate as control variate (Eq. 5).

The architecture distribution p_phi(z) is a set of independent categoricals: the op of every
searchable layer (up to each stage's maximum depth) and, where a stage's depth varies, its depth.
They are held as one padded logits matrix [rows, K] with a mask, the form `relax.sample` takes.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.jsonutil import read_json, write_json, write_text
from hwnas.latency.measured import MeasuredLatency
from hwnas.search import relax
from hwnas.search.cost import COSTS, relative_cost
from hwnas.search.loop import SearchState, run_epochs
from hwnas.search.rundir import RunDir, read_log_for_resume
from hwnas.search.supernet import Supernet, straight_through
from hwnas.search.train import deterministic_training
from hwnas.spaces.elastic import calibrate, elasticity_scale
from hwnas.spaces.mbconv import SKIP, Arch, LayerChoice, Space
from hwnas.surrogates.base import DifferentiableLatencyModel


@dataclass
class ArchSample:
    arch: Arch
    relax: relax.RelaxSample


def latency_penalty(latency_ms, target_ms: float, weight: float, form: str = "hinge-ms"):
    """UNAS's hinge weight * relu(L - T) in ms (hinge-ms, the default), or weight times one of the
    relative costs every method shares (`hwnas.search.cost`)."""
    if form == "hinge-ms":
        return weight * torch.relu(torch.as_tensor(latency_ms) - target_ms)
    return weight * relative_cost(torch.as_tensor(latency_ms) / target_ms, form)


class ArchDistribution(nn.Module):
    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        rows: list[tuple[str, int, int]] = []  # ("op", stage, layer) or ("depth", stage, -1)
        sizes: list[int] = []
        for i, shape in enumerate(space.stages):
            for j in range(shape.max_depth):
                rows.append(("op", i, j))
                sizes.append(len(space.op_names(i, j)))
            if shape.max_depth > shape.min_depth:
                rows.append(("depth", i, -1))
                sizes.append(shape.max_depth - shape.min_depth + 1)
        self.rows, self.sizes = rows, sizes
        k = max(sizes)
        self.logits = nn.Parameter(torch.zeros(len(rows), k))  # uniform at the start
        mask = torch.zeros(len(rows), k, dtype=torch.bool)
        for r, n in enumerate(sizes):
            mask[r, :n] = True
        self.register_buffer("mask", mask)

    def sample(self, tau: float, generator: torch.Generator | None = None) -> ArchSample:
        s = relax.sample(self.logits, tau, self.mask, generator)
        return ArchSample(self.to_arch(s.z), s)

    def to_arch(self, z: torch.Tensor, full: bool = False) -> Arch:
        """The discrete architecture of choice indices z (ops at their default widths; full:
        every stage at its maximum depth)."""
        space = self.space
        ops: dict[tuple[int, int], int] = {}
        depth = {i: shape.max_depth if full else shape.min_depth for i, shape in enumerate(space.stages)}
        for (kind, i, j), k in zip(self.rows, z.tolist()):
            if kind == "op":
                ops[(i, j)] = k
            elif not full:
                depth[i] = space.stages[i].min_depth + k
        doc = {
            "space": space.name,
            "width_mult": space.width_mult,
            "stages": [
                {"layers": [space.op_names(i, j)[ops[(i, j)]] for j in range(depth[i])]} for i in range(len(space.stages))
            ],
        }
        return space.validate(doc)

    def derive(self, full: bool = False) -> Arch:
        """The most likely architecture (full: every stage at its maximum depth)."""
        return self.to_arch(self.logits.detach().masked_fill(~self.mask, float("-inf")).argmax(-1), full)

    def depth_probs(self) -> list[list[float]]:
        """The depth distribution of every stage ([1.0] where its depth is fixed)."""
        _, depth_w = self.weights(relax.masked_log_softmax(self.logits.detach(), self.mask).exp())
        return [d.tolist() for d in depth_w]

    def weights(self, w: torch.Tensor) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """Relaxed weights [rows, K] as the latency models take them: op weights per layer,
        depth weights per stage (a single 1 where a stage's depth is fixed)."""
        op_w: list[list[torch.Tensor]] = [[] for _ in self.space.stages]
        depth_w: list[torch.Tensor] = [torch.ones(1, dtype=w.dtype) for _ in self.space.stages]
        for r, ((kind, i, _), n) in enumerate(zip(self.rows, self.sizes)):
            if kind == "op":
                op_w[i].append(w[r, :n])
            else:
                depth_w[i] = w[r, :n]
        return op_w, depth_w

    def entropy(self) -> float:
        logp = relax.masked_log_softmax(self.logits.detach(), self.mask)
        p = logp.exp()
        return float(-(p * logp.masked_fill(~self.mask, 0.0)).sum())

    def max_probs(self) -> list[float]:
        """Each decision's most likely choice's probability (1/K: uniform; 1: decided)."""
        return relax.masked_log_softmax(self.logits.detach(), self.mask).exp().max(-1).values.tolist()


class GradientLog:
    """Per epoch, what moves alpha: for the cross-entropy and the latency gradient, the mean of
    their norms and their agreement (the norm of the epoch's mean gradient over the mean norm: 1
    when every step points the same way, about 1/sqrt(steps) for pure noise); and the variance of
    the latency gradient under RELAX against plain REINFORCE on the same samples (summed over the
    logits' components: the total variance)."""

    def __init__(self):
        self.n = 0
        self.sums: dict[str, torch.Tensor | float] = {}

    def _add(self, name: str, g: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + g
        self.sums[name + "_sq"] = self.sums.get(name + "_sq", 0.0) + g * g
        self.sums[name + "_norm"] = self.sums.get(name + "_norm", 0.0) + float(g.norm())

    def add(self, ce: torch.Tensor | None, latency: torch.Tensor, reinforce: torch.Tensor) -> None:
        self.n += 1
        self._add("ce", torch.zeros_like(latency) if ce is None else ce)
        self._add("latency", latency)
        self._add("reinforce", reinforce)

    def record(self) -> dict[str, float]:
        if self.n < 2:
            return {}
        out = {}
        for name in ("ce", "latency"):
            mean_norm = self.sums[name + "_norm"] / self.n
            out[f"grad_norm_{name}"] = mean_norm
            out[f"grad_agreement_{name}"] = float((self.sums[name] / self.n).norm()) / mean_norm if mean_norm > 0 else 0.0
        for name, key in (("relax", "latency"), ("reinforce", "reinforce")):
            mean = self.sums[key] / self.n
            var = (self.sums[key + "_sq"] / self.n - mean * mean).clamp_min(0) * self.n / (self.n - 1)
            out[f"grad_var_{name}"] = float(var.sum())
        return out


def relax_latency_loss(
    dist: ArchDistribution,
    s: ArchSample,
    measured_ms: float,
    surrogate: DifferentiableLatencyModel,
    target_ms: float,
    weight: float,
    form: str = "hinge-ms",
) -> torch.Tensor:
    """A loss whose gradient w.r.t. the logits is the RELAX estimate of grad E[f(L(z))]:
    f on the measured latency, the surrogate through the same penalty as control variate."""

    def control(w: torch.Tensor) -> torch.Tensor:
        op_w, depth_w = dist.weights(w)
        return latency_penalty(surrogate.soft(op_w, depth_w), target_ms, weight, form)

    f_z = latency_penalty(measured_ms, target_ms, weight, form)
    return relax.relax_loss(f_z, control, s.relax)


# --- the search -----------------------------------------------------------------------------------

CE_ESTIMATORS = ("gumbel", "rebar", "rloo")
PENALTIES = ("hinge-ms", *COSTS)


@dataclass(frozen=True)
class UNASConfig:
    target_ms: float
    true_latency: bool = True  # L(z) measured on the backend; False: the latency model's
    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 64
    train_resolution: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    arch_lr: float = 0.1  # Adam; 0.01 left alpha frozen (entropy -0.5%) in the ~144 steps of a minutes-long run (docs/results.md)
    tau: float = 0.4  # fixed, as UNAS's code
    # latency weight; per ms over the target (hinge-ms, UNAS's) or per unit of L/T - 1. At 0.1 the latency
    # gradient was 3-8% of the cross-entropy one at a 0.34 ms target and the found nets lost to random
    # ones of their latency; at 1, +1.86 SE over them (docs/results.md, "Search quality")
    lam: float = 1.0
    lam_ramp_epochs: int = 2  # lam grows linearly to its value over these epochs after the warm-up
    penalty: str = "hinge-ms"
    ce_estimator: str = "gumbel"
    ce_samples: int = 4  # rloo: architectures drawn per step, each scored on the same search-val batch
    generalization_loss: bool = False  # L_train + gen_lambda * |L_val - L_train| (UNAS Eq. 8)
    gen_lambda: float = 0.5
    calibrate_widths: bool = True  # elastic spaces: end with elasticity-scaling on the measured latency
    # on a latency model with calibration: search at the model's reading of a net measured at the target,
    # so the searched net is not stretched by the model's error at the end (it read 1.17-1.37x here)
    table_target: bool = True
    table_probes: int = 5
    calibrate_tol: float = 0.01  # stop calibrating once the measurement is this close to the target (relative)
    width_align: int = 4  # calibrated widths are multiples of this (see `hwnas.spaces.elastic`)
    measure_every: int = 1
    seed: int = 0
    train_threads: int = 1  # leave a core to the measurement worker

    def __post_init__(self):
        if not (isinstance(self.target_ms, (int, float)) and math.isfinite(self.target_ms) and self.target_ms > 0):
            raise HwnasError(f"target latency must be a positive number of ms, got {self.target_ms!r}")
        for name in ("epochs", "batch_size", "train_resolution", "train_threads", "width_align", "ce_samples", "table_probes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HwnasError(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise HwnasError(f"warm-up epochs must be in [0, {self.epochs - 1}], got {self.warmup_epochs!r}")
        if self.ce_estimator not in CE_ESTIMATORS:
            raise HwnasError(f"unknown cross-entropy estimator {self.ce_estimator!r}; known: {', '.join(CE_ESTIMATORS)}")
        if self.ce_estimator == "rloo" and self.ce_samples < 2:
            raise HwnasError(f"the rloo estimator needs at least 2 samples per step, got {self.ce_samples}")
        if self.penalty not in PENALTIES:
            raise HwnasError(f"unknown latency penalty {self.penalty!r}; known: {', '.join(PENALTIES)}")
        for name in ("lr", "arch_lr", "tau"):
            if not getattr(self, name) > 0:
                raise HwnasError(f"{name} must be positive, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lam_at(self, epoch: float) -> float:
        if self.lam_ramp_epochs <= 0:
            return self.lam
        return self.lam * min(1.0, max(0.0, epoch - self.warmup_epochs) / self.lam_ramp_epochs)


def fastest_arch(space: Space) -> Arch:
    """The cheapest architecture: minimum depths, skip where allowed, else the op with the
    smallest kernel at its minimum width, without SE where possible."""
    stages = []
    for i, shape in enumerate(space.stages):
        layers = []
        for j in range(shape.min_depth):
            names = space.op_names(i, j)
            if SKIP in names:
                layers.append(LayerChoice(SKIP, 0, 0))
                continue
            c_in = space.layer_c_in(i, j)
            options = [LayerChoice(op, space.width_range(op, c_in)[0], space.default_choice(op, c_in).se) for op in names]
            layers.append(min(options, key=lambda c: (space.ops[c.op].kernel, c.mid, c.se)))
        stages.append(tuple(layers))
    return Arch(space.name, space.width_mult, tuple(stages))


def _path(dist: ArchDistribution, w: torch.Tensor, z: torch.Tensor, straight: bool):
    """The supernet's inputs for the sampled z: op index per layer, depth weights per stage
    (one-hot in value) and per-layer op scales (value 1) carrying the gradient to the logits."""
    op_w, depth_w = dist.weights(w)
    path, scales = [], []
    ks = dict(zip(dist.rows, z.tolist()))
    for i, shape in enumerate(dist.space.stages):
        path.append([ks[("op", i, j)] for j in range(shape.max_depth)])
        scales.append([straight_through(op_w[i][j], ks[("op", i, j)]) if straight else None for j in range(shape.max_depth)])
    depths = []
    for i, shape in enumerate(dist.space.stages):
        d = depth_w[i]
        if ("depth", i, -1) in ks:
            hard = torch.zeros_like(d)
            hard[ks[("depth", i, -1)]] = 1.0
            d = hard - d.detach() + d if straight else hard
        depths.append(d)
    return path, depths, scales if straight else None


def search(
    config: UNASConfig,
    data,
    surrogate,
    out,
    measurer=None,
    lut=None,
    measure_batch: int = 1,
    run_info: dict[str, Any] | None = None,
    show_progress: bool = True,
    stop_after_epoch: int | None = None,
    echo: Callable[[str], None] = lambda s: None,
    repair: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) a UNAS search into run directory `out`; returns the summary.

    surrogate: a differentiable latency model (its .space is the deployment space): the control
    variate of the RELAX latency term. measurer: a Measurer for the true latency; with a worker
    (ONNX backends) each sample is measured in another process while the supernet trains; without
    config.true_latency each sample's latency is the surrogate's. lut: the lookup table, to record
    its prediction for every sample (None: not recorded). repair: rebuild a damaged log from its
    valid records and the checkpoint."""
    deploy = surrogate.space
    if deploy.num_classes != data.num_classes:
        raise HwnasError(f"the latency model is for {deploy.num_classes} classes but the data has {data.num_classes}")
    if config.true_latency and measurer is None:
        raise HwnasError("--true-latency needs a backend to measure on")
    latency_of = None
    if config.true_latency:
        # pin and none: measured in the worker while the supernet trains; pause (and a measurer
        # without a mode): the training waits until the sample is timed, so nothing of ours competes.
        overlap = measurer.isolation in ("pin", "none")
        # Each sample is one process's measurement in a long-lived worker; the final architecture
        # and the calibration take the protocol's k fresh processes.
        latency_of = (lambda a: measurer.submit_arch(deploy, a, measure_batch, processes=1)) if overlap else \
            (lambda a: _waited(measurer.submit_arch(deploy, a, measure_batch, processes=1)))
    train_space = Space(deploy.name, config.train_resolution, deploy.width_mult, deploy.num_classes)
    run = RunDir(out)
    resume = run.start({
        "method": "unas", **config.to_json(), "deploy_space": deploy.config, "train_space": train_space.config,
        "latency_model": getattr(surrogate, "name", type(surrogate).__name__), "data": data.name,
        "data_sizes": {s: data.size(s) for s in ("train", "val", "test")}, "measure_batch": measure_batch,
        **(run_info or {}),
    })
    try:
        return _search(run, resume, config, data, surrogate, lut, measurer, measure_batch, latency_of, deploy,
                       train_space, show_progress, stop_after_epoch, echo, repair)
    finally:
        run.close()


def _search(run, resume, config, data, surrogate, lut, measurer, measure_batch, latency_of, deploy, train_space,
            show_progress, stop_after_epoch, echo, repair):
    table_target = None
    if config.table_target and not config.true_latency and config.calibrate_widths and deploy.definition.elastic \
            and measurer is not None:
        table_target = _table_target(run, config, surrogate, measurer, deploy, measure_batch, echo)
    # the epochs search at the model's reading of the target; calibration and the summary keep the target
    search_cfg = replace(config, target_ms=table_target["search_target_ms"]) if table_target else config
    floor = fastest_arch(deploy)
    floor_ms = MeasuredLatency(deploy, measurer, measure_batch).predict(floor) if config.true_latency else surrogate.predict(floor)
    if floor_ms > search_cfg.target_ms:
        raise HwnasError(f"no architecture of the space meets {config.target_ms:g} ms: the fastest one "
                         f"{'measures' if config.true_latency else 'looks up at'} {floor_ms:.4g} ms"
                         + (f", over the latency model's reading of the target, {search_cfg.target_ms:.4g} ms" if table_target else ""))
    samples_path = run.path / "samples.jsonl"

    with deterministic_training(config.train_threads, config.seed):
        net = Supernet(train_space)
        dist = ArchDistribution(deploy)
        state = SearchState(
            supernet=net, dist=dist,
            opt_w=torch.optim.SGD(net.weight_parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay),
            opt_a=torch.optim.Adam(dist.parameters(), lr=config.arch_lr, betas=(0.5, 0.999)),
            data_gen=torch.Generator().manual_seed(config.seed), sample_gen=torch.Generator().manual_seed(config.seed + 1),
        )

        def samples_log(epochs_done: int):
            samples = read_log_for_resume(samples_path, "sample log", repair)[0]  # checked before any log changes
            return lambda: _rewrite_samples(samples_path, samples, epochs_done)

        def after_epoch() -> dict[str, Any]:
            arch = dist.derive()
            record = dict(arch=arch.to_json(), arch_hash=arch.hash, depths=list(arch.depths),
                          surrogate_ms=float(surrogate.predict(arch)),
                          lookup_ms=float(lut.predict(arch)) if lut is not None else None)
            if measurer is not None and config.measure_every and state.epoch % config.measure_every == 0:
                record["measured_ms"] = MeasuredLatency(deploy, measurer, measure_batch).predict(arch)
            return record

        def line(record: dict[str, Any]) -> str:
            on_table = "" if search_cfg is config else f", {search_cfg.target_ms:.4g} on the model"
            return (f"val acc {record.get('val_acc', float('nan')):.3f}, "
                    f"derived {record.get('measured_ms', record['surrogate_ms']):.4g} ms (target {config.target_ms:.4g}{on_table})")

        steps = math.ceil(data.size("train") / config.batch_size)
        if not run_epochs(run, resume, state, config.epochs,
                          lambda: _unas_epoch(state, search_cfg, data, surrogate, lut, latency_of, steps, samples_path,
                                              show_progress),
                          after_epoch, line, echo, stop_after_epoch, repair, other_logs=samples_log):
            return None
    return _unas_finish(run, state, config, surrogate, lut, measurer, deploy, train_space, measure_batch, echo,
                        table_target)


def _table_target(run: RunDir, config: UNASConfig, model, measurer, deploy: Space, batch: int, echo) -> dict[str, Any]:
    """How many times the measured latency the latency model (the table, or a corrected one) reads
    near the target, and so the target the epochs search at: the median of model / measured over
    `table_probes` random networks (the distribution's first draws are random) scaled to the target
    on the model. The record's names say "table", the model most searched on: the table's error
    differs from net to net (1.17-1.37x on this host, benchmarks/table_reads.py), and a
    median shrugs off one measurement that reads off. Only usable measurements count; with none,
    the target is searched as given, and the record says so. Kept in the run, so a resumed search
    keeps its target."""
    path = run.path / "table_target.json"
    if path.exists():
        return read_json(path, "table target")
    echo(f"measuring the latency model's reading of {config.target_ms:g} ms on {config.table_probes} random networks")
    hardware, probes = MeasuredLatency(deploy, measurer, batch), []
    for arch in deploy.random_archs(config.table_probes, seed=config.seed, align=config.width_align):
        arch = elasticity_scale(model, arch, config.target_ms, align=config.width_align).arch
        measured_ms = hardware.predict(arch)  # re-measured once if flagged
        probes.append({"arch": arch.to_json(), "table_ms": float(model.predict(arch)), "measured_ms": measured_ms,
                       "flags": hardware.flags})
    ratios = [p["table_ms"] / p["measured_ms"] for p in probes if usable(p["flags"])]
    reads = statistics.median(ratios) if ratios else None
    record = {"target_ms": config.target_ms, "table_reads": reads, "usable_probes": len(ratios),
              "search_target_ms": config.target_ms * reads if reads else config.target_ms, "probes": probes}
    write_json(path, record)
    if reads:
        echo(f"  the model reads {reads:.3f}x the measured latency ({len(ratios)} of {len(probes)} probes usable): "
             f"searching at {record['search_target_ms']:.4g} ms on the model")
    else:
        echo("  every probe's measurement stays flagged: searching at the target as given")
    return record


def _waited(pending):
    pending.result()
    return pending


def _rewrite_samples(path, samples: list[dict[str, Any]], epochs_done: int) -> None:
    """Drop sample records past the checkpoint's epoch (measured, then interrupted)."""
    if path.exists():
        write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in samples if r["epoch"] <= epochs_done))


def _append_jsonl(path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _unas_epoch(state: SearchState, cfg: UNASConfig, data, surrogate, lut, latency_of, steps: int, samples_path,
                show_progress: bool) -> dict[str, Any]:
    net, dist, epoch = state.supernet, state.dist, state.epoch
    net.train()
    search_arch = epoch >= cfg.warmup_epochs
    res, bs = cfg.train_resolution, cfg.batch_size
    total_steps = cfg.epochs * steps
    sums = {k: 0.0 for k in ("train_loss", "train_correct", "train_n", "val_loss", "val_correct", "val_n", "latency", "penalty")}
    arch_steps = latency_steps = 0
    grads = GradientLog()

    def cycle(split):
        while True:
            for x, y in data.batches(split, bs, res, shuffle=True, generator=state.data_gen):
                if y.numel() >= 2:
                    yield x, y

    val_iter, train_iter = cycle("val"), cycle("train")
    bar = tqdm(data.batches("train", bs, res, shuffle=True, generator=state.data_gen), total=steps,
               desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", file=sys.stderr, leave=False,
               disable=not show_progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        if y.numel() < 2:
            continue  # BatchNorm cannot train on a lone image
        t = epoch * steps + step
        for group in state.opt_w.param_groups:
            group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * t / total_steps))
        s = dist.sample(cfg.tau, state.sample_gen)
        pending = latency_of(s.arch) if (search_arch and latency_of is not None) else None  # measured while we train
        # Weights: the sampled architecture's path on search-train.
        path, depths, _ = _path(dist, s.relax.onehot, s.relax.z, straight=False)
        state.opt_w.zero_grad(set_to_none=True)
        logits = net(x, path, depths)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        state.opt_w.step()
        n = y.numel()
        sums["train_loss"] += loss.item() * n
        sums["train_correct"] += int((logits.argmax(1) == y).sum())
        sums["train_n"] += n
        if not search_arch:
            continue
        # Architecture: cross-entropy on search-val (+ the generalisation gap), RELAX on the latency.
        xv, yv = next(val_iter)
        ce_val, logits_v = _ce_term(net, dist, s, xv, yv, cfg, state.sample_gen)
        arch_loss = ce_val
        if cfg.generalization_loss:
            xt, yt = next(train_iter)
            ce_train, _ = _ce_term(net, dist, s, xt, yt, cfg, state.sample_gen)
            arch_loss = ce_train + cfg.gen_lambda * (ce_val - ce_train).abs()
        lookup_ms = float(lut.predict(s.arch)) if lut is not None else None
        surrogate_ms = float(surrogate.predict(s.arch))
        steers = True
        if pending is not None:
            measured = pending.result()
            latency_ms, cached = measured.measurement.stats["median_ms"], measured.cached
            m = measured.measurement
            quality = {"flags": m.flags, "ci95_ms": m.ci95_ms, "reference_ratio": m.reference_ratio,
                       "isolation": m.isolation}
            # a reading still flagged after its retries never steers alpha: the step moves it on
            # the cross-entropy alone, and the epoch counts it (in one noisy hour 413 of 1728 were)
            steers = usable(m.flags)
        else:
            latency_ms, cached, quality = surrogate_ms, True, {}
        lam = cfg.lam_at(epoch + step / steps)
        # The two terms' gradients apart, so the log shows which one moves alpha and how noisy it is.
        g_ce = torch.autograd.grad(arch_loss, dist.logits, retain_graph=steers, allow_unused=True)[0]
        if steers:
            lat_loss = relax_latency_loss(dist, s, latency_ms, surrogate, cfg.target_ms, lam, cfg.penalty)
            reinforce = relax.reinforce_loss(latency_penalty(latency_ms, cfg.target_ms, lam, cfg.penalty), s.relax)
            g_lat = torch.autograd.grad(lat_loss, dist.logits, retain_graph=True)[0]
            g_rf = torch.autograd.grad(reinforce, dist.logits)[0]
            grads.add(g_ce, g_lat, g_rf)
            sums["latency"] += latency_ms
            sums["penalty"] += float(latency_penalty(latency_ms, cfg.target_ms, lam, cfg.penalty))
            latency_steps += 1
        else:
            g_lat = torch.zeros_like(dist.logits)
        state.opt_a.zero_grad(set_to_none=True)
        dist.logits.grad = g_lat if g_ce is None else g_ce + g_lat
        state.opt_a.step()
        _append_jsonl(samples_path, {
            "epoch": epoch + 1, "step": t, "arch_hash": s.arch.hash, "latency_ms": latency_ms,
            "source": "measured" if pending is not None else "model", "cached": cached, "lookup_ms": lookup_ms,
            "surrogate_ms": surrogate_ms, "steered": steers, **quality,
        })
        n = yv.numel()
        sums["val_loss"] += ce_val.item() * n
        sums["val_correct"] += int((logits_v.argmax(1) == yv).sum())
        sums["val_n"] += n
        arch_steps += 1
        bar.set_postfix(lat=f"{latency_ms:.3g}")
    bar.close()
    record = {
        "epoch": epoch + 1, "tau": cfg.tau, "lr": state.opt_w.param_groups[0]["lr"], "arch_updates": search_arch,
        "lam": cfg.lam_at(epoch + 1), "train_loss": sums["train_loss"] / sums["train_n"],
        "train_acc": sums["train_correct"] / sums["train_n"], "alpha_entropy": dist.entropy(),
        "max_prob": [round(p, 4) for p in dist.max_probs()], **grads.record(),
    }
    if arch_steps:
        record.update(val_loss=sums["val_loss"] / sums["val_n"], val_acc=sums["val_correct"] / sums["val_n"],
                      flagged_samples=arch_steps - latency_steps)
    if latency_steps:
        record.update(sampled_latency_ms=sums["latency"] / latency_steps, latency_penalty=sums["penalty"] / latency_steps)
    return record


def _ce_term(net: Supernet, dist: ArchDistribution, s: ArchSample, x, y, cfg: UNASConfig,
             generator: torch.Generator | None = None):
    """Cross-entropy whose gradient reaches the logits, valued at the sampled path's loss:
    straight-through Gumbel-softmax on the sampled path; REBAR (the loss at the relaxed weights as
    its own control variate); or RLOO, the score function of `ce_samples` paths (s and fresh draws
    from `generator`) scored on the same batch, each against the mean of the others."""
    if cfg.ce_estimator == "gumbel":
        path, depths, scales = _path(dist, s.relax.zeta, s.relax.z, straight=True)
        logits = net(x, path, depths, scales)
        return F.cross_entropy(logits, y), logits
    if cfg.ce_estimator == "rloo":
        samples = [s] + [dist.sample(cfg.tau, generator) for _ in range(cfg.ce_samples - 1)]
        with torch.no_grad():
            outs = [net(x, *_path(dist, t.relax.onehot, t.relax.z, straight=False)[:2]) for t in samples]
            losses = torch.stack([F.cross_entropy(o, y) for o in outs])
        score = relax.rloo_loss(losses, torch.stack([t.relax.log_prob for t in samples]))
        return losses[0] + score - score.detach(), outs[0]
    path, depths, _ = _path(dist, s.relax.onehot, s.relax.z, straight=False)
    with torch.no_grad():
        logits = net(x, path, depths)
        f_z = F.cross_entropy(logits, y)

    def control(w: torch.Tensor) -> torch.Tensor:
        op_w, depth_w = dist.weights(w)
        return F.cross_entropy(net.forward_mixed(x, op_w, depth_w), y)

    rebar = relax.relax_loss(f_z, control, s.relax)
    return f_z + rebar - rebar.detach(), logits


def _unas_finish(run: RunDir, state: SearchState, cfg: UNASConfig, surrogate, lut, measurer, deploy: Space,
                 train_space: Space, batch: int, echo, table_target: dict[str, Any] | None) -> dict[str, Any]:
    arch = state.dist.derive()
    calibration = None
    if cfg.calibrate_widths and deploy.definition.elastic and measurer is not None:
        # Fit the widths to the target on the measured latency itself (Algorithm 1 with the
        # hardware as the model): what a lookup-free search needs to land on its target.
        echo("calibrating widths on the measured latency")
        arch, calibration = calibrate(surrogate, MeasuredLatency(deploy, measurer, batch), arch, cfg.target_ms,
                                      tol=cfg.calibrate_tol, full=state.dist.derive(full=True),
                                      depth_probs=state.dist.depth_probs(), align=cfg.width_align)
        for k, rnd in enumerate(calibration["rounds"]):
            echo(f"  round {k + 1}: predicted x {rnd['factor']:.3f} = {rnd['predicted_ms']:.4g} ms, measured {rnd['measured_ms']:.4g} ms"
                 + "".join(f"; {c}" for c in rnd["depth_changes"]))
    final = MeasuredLatency(deploy, measurer, batch) if measurer is not None else None
    measured = final.predict(arch) if final is not None else None
    lookup = float(lut.predict(arch)) if lut is not None else None
    summary = {
        "method": "unas", "true_latency": cfg.true_latency, "target_ms": cfg.target_ms,
        "predicted_ms": float(surrogate.predict(arch)), "lookup_ms": lookup, "measured_ms": measured,
        "measured_flags": None if final is None else final.flags,
        "measured_ci95_ms": None if final is None else final.ci95_ms,
        "lookup_error_pct": None if measured is None or lookup is None else 100.0 * (lookup - measured) / measured,
        "surrogate_error_pct": None if measured is None else 100.0 * (float(surrogate.predict(arch)) - measured) / measured,
        "measured_distance_to_target_pct": None if measured is None else 100.0 * (measured - cfg.target_ms) / cfg.target_ms,
        "deploy_resolution": deploy.resolution, "train_resolution": train_space.resolution,
        "width_mult": deploy.width_mult, "epochs": state.epoch, "arch_hash": arch.hash, "depths": list(arch.depths),
        "macs_m": deploy.macs(arch) / 1e6, "params_m": deploy.params(arch) / 1e6,
        "latency_model": getattr(surrogate, "name", type(surrogate).__name__), "calibration": calibration,
        "table_target": table_target, "worker_failures": getattr(getattr(measurer, "worker", None), "failures", 0),
    }
    run.write_final_arch(arch.to_json())
    run.write_summary(summary)
    return summary
