"""Elasticity-scaling (TF-NAS Algorithm 1): fit an MBConv architecture's widths, and where the
width bound stops it its depths, to a target latency under any latency model. TF-NAS ends every
epoch with it; UNAS calibrates on the measured latency with it; sampling and `hwnas train
--target` scale random architectures to a latency with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwnas.backends.protocol import usable
from hwnas.spaces.mbconv import Arch, LayerChoice, Space


@dataclass
class ScaleResult:
    arch: Arch
    latency_ms: float
    gammas: list[float]  # one per step: stages 1-6, 2-6, ..., 6
    bound: str | None = None  # "min": the target is below the latency at the minimum widths; "max": above it at the maximum
    message: str = ""
    seed_latency_ms: float = 0.0
    depth_changes: list[str] = field(default_factory=list)  # layers added or removed to get within the width bound


def scale_widths(space: Space, arch: Arch, first_stage: int, gamma: float, align: int = 1) -> Arch:
    """gamma * sn[first_stage:]: every mid width from that stage on scaled, rounded to a multiple
    of `align` and clipped to its op's [e_min * C_in, e_max * C_in] (the paper's bound)."""
    stages = list(arch.stages)
    for i in range(first_stage, len(stages)):
        layers = []
        for j, c in enumerate(stages[i]):
            layers.append(LayerChoice(c.op, space.aligned_width(c.op, space.layer_c_in(i, j), gamma * c.mid, align), c.se))
        stages[i] = tuple(layers)
    return Arch(arch.space, arch.width_mult, tuple(stages))


def _gamma_range(space: Space, arch: Arch, first_stage: int) -> tuple[float, float]:
    """The gammas that put every width from that stage on at its lower / upper bound."""
    mids = [(c.mid, *space.width_range(c.op, space.layer_c_in(i, j)))
            for i in range(first_stage, len(space.stages)) for j, c in enumerate(arch.stages[i])]
    return min(lo / mid for mid, lo, _ in mids), max(hi / mid for mid, _, hi in mids)


def fit_depth(model, full: Arch, depths: list[int], depth_probs: list[list[float]], target_ms: float,
              align: int = 1) -> tuple[Arch, list[str]]:
    """Depths from which elasticity-scaling can reach the target within the width bound.

    The paper scales widths only, so a seed network too shallow (or too deep) for the target
    stops at the bound and misses it (a known complaint about the authors' code). Here, while
    the latency at the maximum widths is under the target, the stage whose searched depth
    distribution puts the most mass beyond its current depth gets its next layer (taken from
    `full`, the seed network at every stage's maximum depth); while the latency at the minimum
    widths is over it, the stage with the most mass below its depth loses its last layer."""
    space = model.space
    depths, changes = list(depths), []
    seen = {tuple(depths)}  # a target between two depths' reach would send it back and forth forever

    def at(ds):
        return Arch(full.space, full.width_mult, tuple(st[:d] for st, d in zip(full.stages, ds)))

    while True:
        arch = at(depths)
        g_lo, g_hi = _gamma_range(space, arch, 0)
        if model.predict(scale_widths(space, arch, 0, g_hi, align)) < target_ms:
            step = 1
        elif model.predict(scale_widths(space, arch, 0, g_lo, align)) > target_ms:
            step = -1
        else:
            return arch, changes
        candidates = []
        for i, (shape, probs) in enumerate(zip(space.stages, depth_probs)):
            d = depths[i] + step
            if shape.min_depth <= d <= shape.max_depth and tuple(depths[:i] + [d] + depths[i + 1:]) not in seen:
                k = depths[i] - shape.min_depth  # index of the current depth in probs
                candidates.append((sum(probs[k + 1:]) if step > 0 else sum(probs[:k]), i))
        if not candidates:
            return arch, changes
        _, i = max(candidates, key=lambda c: c[0])  # ties: the earliest stage
        depths[i] += step
        seen.add(tuple(depths))
        changes.append(f"stage {i + 1} depth {depths[i] - step} -> {depths[i]}")


def elasticity_scale(model, arch: Arch | dict, target_ms: float, tol: float = 1e-6,
                     full: Arch | None = None, depth_probs: list[list[float]] | None = None, align: int = 1) -> ScaleResult:
    """Algorithm 1: for stages 1-6, then 2-6, ..., then 6, the largest gamma whose predicted
    latency is within the target (bisection; latency is taken to grow with width, which holds
    on widths that are multiples of the backend's `align`). With `full` and `depth_probs`, depths
    are first fitted so the width bound cannot stop it (`fit_depth`)."""
    space = model.space
    arch = space.validate(arch)
    seed_ms = float(model.predict(arch))
    changes: list[str] = []
    if full is not None:
        arch, changes = fit_depth(model, space.validate(full), list(arch.depths), depth_probs, target_ms, align)
    gammas, bound, message = [], None, ""
    for s in range(len(space.stages)):
        g_lo, g_hi = _gamma_range(space, arch, s)

        def fits(g: float) -> bool:
            return model.predict(scale_widths(space, arch, s, g, align)) <= target_ms

        if fits(g_hi):
            g = g_hi
            if s == 0:
                bound = "max"
                message = (f"at the maximum widths the predicted latency "
                           f"{model.predict(scale_widths(space, arch, 0, g_hi, align)):.4g} ms is still under the target {target_ms:.4g} ms")
        elif not fits(g_lo):
            g = g_lo
            if s == 0:
                bound = "min"
                message = (f"the width bound e_min*C_in stops the latency at "
                           f"{model.predict(scale_widths(space, arch, 0, g_lo, align)):.4g} ms, above the target {target_ms:.4g} ms")
        else:
            lo, hi = g_lo, g_hi  # fits(lo), not fits(hi)
            while hi - lo > tol * hi:
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            g = lo
        arch = scale_widths(space, arch, s, g, align)
        gammas.append(g)
    final_ms = float(model.predict(arch))
    if bound is None and final_ms > target_ms * (1 + tol):
        # scaling a stage changes the next stages' C_in, and with it their lowest width e_min*C_in:
        # a later stage can be forced wider than the target allows
        bound = "min"
        message = (f"the width bound e_min*C_in of a later stage stops the latency at {final_ms:.4g} ms, "
                   f"above the target {target_ms:.4g} ms")
    if bound and changes:
        message += f" (after depth changes: {', '.join(changes)})"
    elif bound and full is not None:
        message += " at every depth the space allows"
    return ScaleResult(arch, final_ms, gammas, bound, message, seed_ms, changes)


class ScaledModel:
    """A latency model times a factor: the surrogate corrected by the ratio measured on one architecture."""

    def __init__(self, model, factor: float):
        self.model, self.factor, self.space = model, factor, model.space

    def predict(self, arch) -> float:
        return self.factor * float(self.model.predict(arch))


def _next_factor(points: list[tuple[float, float]], target_ms: float) -> float:
    """The measured/surrogate factor for the next round. The ratio of the last round alone converges
    slowly where much of the measured latency does not scale with the network (a small network's
    fixed overhead: the error shrinks only by that share a round), so the line measured = a + b *
    surrogate through the last two nets aims the next one (a secant step), kept within 4x of the
    plain ratio; the plain ratio where the two give no usable line."""
    s1, m1 = points[-1]
    ratio = m1 / s1
    if len(points) < 2:
        return ratio
    s0, m0 = points[-2]
    if abs(s1 - s0) <= 0.01 * max(s0, s1) or (m1 - m0) / (s1 - s0) <= 0:
        return ratio
    b = (m1 - m0) / (s1 - s0)
    aim = (target_ms - (m1 - b * s1)) / b  # the surrogate latency the line puts at the target
    if aim <= 0:
        return ratio
    return float(min(max(target_ms / aim, ratio / 4), ratio * 4))


def _flags(measured) -> list[str]:
    return list(getattr(measured, "flags", []))  # a model without flags is exact (tests' hardware)


def calibrate(surrogate, measured, arch: Arch, target_ms: float, tol: float = 0.01,
              rounds: int = 4, **scale_options) -> tuple[Arch, dict[str, Any]]:
    """Fit an architecture's widths (and, with `full`/`depth_probs`, depths) to the target on the
    measured latency: elasticity-scaling under the surrogate times the measured/predicted ratio,
    re-measured, the ratio updated, until the measurement is within `tol` of the target.
    `measured`: the hardware as a latency model (`hwnas.latency.measured.MeasuredLatency`: predict
    measures, `flags` says whether the last measurement is usable).

    One measurement a round, and no decision rests on comparing two noisy measurements (a
    bisection on the measured latency itself stalls wherever noise makes a wider net look slower).
    A width bound ends the rounds only when a usable measurement bears it out: the bound is the
    scaled surrogate's, and where the factor is off (a UNAS run: a 0.7% overshoot at the lowest
    widths under the factor, 8% under the target measured) the next round's factor frees it.
    Returns the round whose measurement came closest to the target (a usable one before any flagged
    one), and every round."""
    seed_ms = measured.predict(arch)
    factor = seed_ms / float(surrogate.predict(arch))  # a start only, even from a flagged seed
    # (surrogate ms, measured ms) of each net measured usably: a measurement still flagged after its
    # re-measure is logged but never steers the factor (the next round then measures afresh)
    points = [(float(surrogate.predict(arch)), seed_ms)] if usable(_flags(measured)) else []
    rounds_log, best = [], None
    for _ in range(rounds):
        r = elasticity_scale(ScaledModel(surrogate, factor), arch, target_ms, **scale_options)
        ms = measured.predict(r.arch)
        ok = usable(_flags(measured))
        rounds_log.append({"factor": factor, "predicted_ms": r.latency_ms, "measured_ms": ms,
                           "flags": _flags(measured), "usable": ok,
                           "width_bound": r.bound, "depth_changes": r.depth_changes})
        rank = (not ok, abs(ms - target_ms))  # a usable round beats any flagged one
        if best is None or rank < best[2]:
            best = (r, ms, rank)
        bound_holds = (r.bound == "min" and ms >= target_ms * (1 - tol)) or (r.bound == "max" and ms <= target_ms * (1 + tol))
        if ok and (abs(ms / target_ms - 1) <= tol or bound_holds):
            break
        if ok:
            points.append((float(surrogate.predict(r.arch)), ms))
            factor = _next_factor(points, target_ms)
    r, ms, _ = best
    return r.arch, {"seed_measured_ms": seed_ms, "rounds": rounds_log, "measured_ms": ms, "width_bound": r.bound, "width_bound_note": r.message,
                    "depth_changes": r.depth_changes, "gammas": r.gammas}
