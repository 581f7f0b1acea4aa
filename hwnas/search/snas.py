"""SNAS (Xie et al., ICLR 2019) on the darts cell space, with resource costs including latency.

Every edge of the supernet carries a concrete (Gumbel-softmax) sample Z of its op choice,
drawn once per step and shared by all normal cells (and, separately, all reduction cells),
with a temperature annealed over the run. One-level, as SNAS: the weights theta and the
architecture alpha get their gradients from the same backward pass of the training loss
plus the resource term; `bilevel` updates alpha on a search-val batch instead.

Resource constraint (Eq. 10): C(Z) = sum over edges of Z_e . c_e, where c_e holds each op's
cost on that edge summed over the cells of its kind. Costs: params, flops (MACs), mac
(memory access cost), latency (the cell table's edge entries; with `reparam`/`discrete` the
whole table, nodes and preprocessing included) and the authors' mixed cost. Gradient forms:

  score     the paper's: each edge's concrete log-density times its own local cost, detached
  reparam   the cost of Z itself, differentiated through the Gumbel-softmax sample
  discrete  the cost under softmax(alpha)

Without a target the cost enters as lambda * C / C_uniform (C_uniform: the cost with every
non-none op equally likely), or with `log_penalty` each op cost c becomes log(1 + c / mean c).
With a target T the cost is lambda * max(C/T - 1, 0) (hinge) or lambda * |C/T - 1| (abs); the
score form then weights the local costs by the penalty's slope at the sample's total cost.

Derivation: every edge keeps its argmax op and edges whose argmax is `none` drop out (SNAS's
child graph); `top2` applies DARTS's rule instead (two strongest non-none edges per node).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.cells import one_hot
from hwnas.search.cellsearch import (
    accuracy,
    annealed,
    check_cell_search,
    check_training_settings,
    epoch_batches,
    finish,
    land_search,
    run_epochs,
)
from hwnas.search.cost import COSTS, relative_cost, relative_cost_slope
from hwnas.search.loop import SearchState
from hwnas.search.rundir import RunDir
from hwnas.search.train import deterministic_training
from hwnas.spaces.darts import (
    CELL_TYPES,
    EDGES,
    N_EDGES,
    PRIMITIVES,
    STEPS,
    DartsSpace,
    FactorizedReduce,
    ReLUConvBN,
    edge_index,
    edge_stride_hw,
    make_op,
    op_costs,
)
from hwnas.validate import is_finite_number as num
from hwnas.validate import require as check

RESOURCES = ("params", "flops", "mac", "latency", "mixed")
GRADIENTS = ("score", "reparam", "discrete")
DERIVATIONS = ("argmax", "top2")
COST_ON = ("sample", "child")
NONE = PRIMITIVES.index("none")


@dataclass(frozen=True)
class SNASConfig:
    resource: str = "latency"
    target: float | None = None  # ms for latency; millions of params / MACs / bytes-ish units for the others
    penalty: str = "abs"  # with a target: hinge or abs
    gradient: str = "reparam"
    # "sample": the cost of the relaxed sample (SNAS's). "child": the value is the derived child's,
    # the gradient the relaxed one's (straight-through), so the penalty sees the network deployed.
    cost_on: str = "sample"
    log_penalty: bool = False
    lam: float = 1.0
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025  # DARTS/SNAS: SGD 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    # Adam. The authors' 3e-4 over 150 epochs barely moves alpha in a minutes-long run; at C=4, 3 cells,
    # 16 px, 6 epochs with a flops target of 0.5 M, 0.02 left the edge entropy at 2.071 nats (log 8 = 2.079)
    # and the child at 1.48 M MACs, 0.1 took them to 1.964 nats and 0.76 M (docs/darts.md).
    arch_lr: float = 0.1
    arch_weight_decay: float = 1e-3
    tau: float = 1.0  # authors: 1.0 linearly down to 0.03 over the run
    tau_min: float = 0.03
    anneal: str = "linear"  # or "exp": tau * (tau_min / tau) ** (epoch / (epochs - 1))
    bilevel: bool = False
    derive: str = "argmax"
    # After the search: change the child's ops, fewest nats of alpha first, until the table reads the
    # target (first aimed where the search's last usable --measure-every reading puts the table),
    # then re-aim the table at target * table / measured for up to land_rounds measured rounds
    # (`cellsearch.land_search`). Not SNAS's: its argmax child lands where alpha left it.
    land: bool = False
    land_rounds: int = 3
    grad_clip: float = 5.0
    seed: int = 0
    measure_every: int = 0
    final_sessions: int = 3
    train_threads: int = 1

    def __post_init__(self):
        for name, choices in (("resource", RESOURCES), ("gradient", GRADIENTS), ("penalty", COSTS),
                              ("derive", DERIVATIONS), ("anneal", ("linear", "exp")), ("cost_on", COST_ON)):
            v = getattr(self, name)
            if v not in choices:
                m = difflib.get_close_matches(str(v), choices, n=1)
                raise HwnasError(f"unknown {'cost' if name == 'resource' else name} {v!r} for the darts space"
                                 f"{f' (did you mean {m[0]!r}?)' if m else ''}; known: {', '.join(choices)}")
        check(self.target is None or (num(self.target) and self.target > 0), f"target must be positive, got {self.target!r}")
        check(not (self.log_penalty and self.target is not None), "the log penalty is for a search without a target")
        check(num(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam!r}")
        check(not (self.cost_on == "child" and self.gradient == "score"),
              "the cost on the derived child takes a relaxed gradient (reparam or discrete), not the score function")
        check(not self.land or (self.resource == "latency" and self.target is not None),
              "landing (--land) needs the latency resource and a --target")
        check_training_settings(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def temperature(self, epoch: int) -> float:
        """Temperature of epoch `epoch` (0-based): tau at the first, tau_min at the last."""
        return annealed(self.tau, self.tau_min, epoch, self.epochs, self.anneal)


# --- concrete distribution ---------------------------------------------------------------------------


def gumbel_softmax_sample(alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None):
    """(Z, log Z) per row: Z = softmax((alpha + G) / tau), G Gumbel(0, 1); log Z without underflow."""
    u = torch.rand(alpha.shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    g = -torch.log(-torch.log(u))
    log_z = torch.log_softmax((alpha + g) / tau, dim=-1)
    return log_z.exp(), log_z


def concrete_log_density(log_z: torch.Tensor, alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """log p(z | alpha, tau) of the concrete distribution (Maddison et al. 2017), per row; z is
    given by its log and held fixed, so the gradient flows to alpha only (the score function)."""
    n = alpha.shape[-1]
    log_z = log_z.detach()
    return (math.lgamma(n) + (n - 1) * math.log(tau) + (alpha - (tau + 1) * log_z).sum(-1)
            - n * torch.logsumexp(alpha - tau * log_z, dim=-1))


# --- costs -----------------------------------------------------------------------------------------


def edge_cost_tables(space: DartsSpace, resource: str, table=None) -> dict[str, torch.Tensor]:
    """{kind: [14, 8]}: each op's cost on each edge, summed over the cells of that kind."""
    out = {k: torch.zeros(N_EDGES, len(PRIMITIVES), dtype=torch.float64) for k in CELL_TYPES}
    for k, row in enumerate(space.cell_plan()):
        if resource == "latency":
            if table is None:
                raise HwnasError("the latency cost needs a cell latency table")
            out[row["kind"]] += table._edge_ms[k]
            continue
        for e, (j, i) in enumerate(EDGES):
            stride, h = edge_stride_hw(row, i)
            for o, op in enumerate(PRIMITIVES):
                c = op_costs(op, row["c"], stride, h)
                value = {"params": c["params"], "flops": c["macs"], "mac": c["mac"],
                         "mixed": 0.43 * (2 * c["params"] + c["macs"] / 4000 + c["mac"] / 100)}[resource]
                out[row["kind"]][e, o] += value
    if resource in ("params", "flops", "mac"):  # reported in millions
        out = {k: v / 1e6 for k, v in out.items()}
    return out


def log_tables(tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The log penalty: c -> log(1 + c / mean positive c); `none` stays 0."""
    pos = torch.cat([t[t > 0] for t in tables.values()])
    scale = float(pos.mean()) if pos.numel() else 1.0
    return {k: torch.log1p(t / scale) for k, t in tables.items()}


def local_costs(z: dict[str, torch.Tensor], tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per edge: Z_e . c_e, the edge's share of C(Z) (Eq. 10)."""
    return {k: (z[k].to(torch.float64) * tables[k]).sum(-1) for k in CELL_TYPES}


def total_cost(z: dict[str, torch.Tensor], tables: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(c.sum() for c in local_costs(z, tables).values())


class ResourceCost:
    """The resource term of the loss for one config: `term(alpha, z, log_z, tau)`."""

    def __init__(self, config: SNASConfig, space: DartsSpace, table=None):
        self.config, self.space, self.table = config, space, table
        self.tables = edge_cost_tables(space, config.resource, table)
        if config.log_penalty:
            self.tables = log_tables(self.tables)
        uniform = {k: torch.full((N_EDGES, len(PRIMITIVES)), 1.0 / (len(PRIMITIVES) - 1), dtype=torch.float64)
                   for k in CELL_TYPES}
        for u in uniform.values():
            u[:, NONE] = 0.0
        self.reference = float(self.full(uniform))  # normaliser without a target

    def full(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """C under the weights; the latency cost uses the whole table (stem, nodes, ...) here."""
        if self.config.resource == "latency" and not self.config.log_penalty:
            return self.table.soft(weights).to(torch.float64)
        return total_cost(weights, self.tables)

    def whole(self, child) -> float:
        """The child network's whole cost, in the penalty's unit."""
        c = self.space.costs(child)
        if self.config.resource == "mixed":
            return 0.43 * (2 * c["params"] + c["macs"] / 4000 + c["mac"] / 100)
        return c[{"params": "params", "flops": "macs", "mac": "mac"}[self.config.resource]] / 1e6

    @property
    def counts_fixed_parts(self) -> bool:
        """The latency table's cost is the whole network's already; a log cost has no target unit."""
        return self.config.resource != "latency" and not self.config.log_penalty

    def fixed(self, child) -> float:
        """What Eq. 10's edge sum leaves out of the child's params/FLOPs/MAC: the stem, each cell's
        input convs and the classifier (they vary with the concat). Added to the value, with no
        gradient, so a target means the whole network, as it does for the latency table."""
        return self.whole(child) - float(self.full(one_hot(child))) if self.counts_fixed_parts else 0.0

    def term(self, alpha: dict[str, torch.Tensor], z: dict[str, torch.Tensor], log_z: dict[str, torch.Tensor],
             tau: float) -> tuple[torch.Tensor, float]:
        """(the loss term lambda * penalty, the value of C at the sample)."""
        cfg = self.config
        scale = cfg.target if cfg.target is not None else self.reference
        needs_child = self.counts_fixed_parts or cfg.cost_on == "child"
        child = self.space.validate(derive(alpha, cfg.derive)) if needs_child else None
        fixed = self.fixed(child) if child is not None else 0.0
        if cfg.gradient == "score":
            with torch.no_grad():
                value = float(self.full(z)) + fixed
            # d penalty / dC at the sample's cost, times the per-edge score-function surrogate
            slope = relative_cost_slope(value / scale, cfg.penalty) if cfg.target is not None else 1.0
            local = local_costs({k: v.detach() for k, v in z.items()}, self.tables)
            surrogate = sum((concrete_log_density(log_z[k], alpha[k], tau) * local[k]).sum() for k in CELL_TYPES)
            return cfg.lam * slope * surrogate / scale, value
        weights = z if cfg.gradient == "reparam" else {k: torch.softmax(a, -1) for k, a in alpha.items()}
        c = self.full(weights) + fixed
        if cfg.cost_on == "child":  # straight-through: the derived child's value, the relaxed gradient
            c = self.full(one_hot(child)) + fixed + c - c.detach()
        ratio = c / scale
        loss = relative_cost(ratio, cfg.penalty) if cfg.target is not None else ratio
        return cfg.lam * loss.to(torch.float32), float(c.detach())


# --- supernet ------------------------------------------------------------------------------------


class MixedEdge(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, c, stride, affine=False) for op in PRIMITIVES)

    def forward(self, x, w):
        out = None
        for o, op in enumerate(self.ops):
            if o == NONE or (not w.requires_grad and float(w[o]) == 0.0):
                continue  # `none` adds zeros; a zero weight (one-hot child) needs no op
            y = w[o] * op(x)
            out = y if out is None else out + y
        return out if out is not None else torch.zeros_like(self.ops[NONE](x))


class SearchCell(nn.Module):
    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, affine=False)
        self.pre1 = ReLUConvBN(c_p, c, affine=False)
        self.edges = nn.ModuleList(MixedEdge(c, 2 if reduction and i < 2 else 1) for (j, i) in EDGES)

    def forward(self, s0, s1, w):
        states = [self.pre0(s0), self.pre1(s1)]
        for j in range(STEPS):
            states.append(sum(self.edges[edge_index(j, i)](states[i], w[edge_index(j, i)]) for i in range(2 + j)))
        return torch.cat(states[2:], dim=1)


class SNASSupernet(nn.Module):
    def __init__(self, space: DartsSpace):
        super().__init__()
        c = space.channels
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        self.cells = nn.ModuleList()
        c_pp = c_p = 3 * c
        reduction_prev = False
        for row in space.cell_plan():
            reduction = row["kind"] == "reduce"
            self.cells.append(SearchCell(c_pp, c_p, row["c"], reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, STEPS * row["c"], reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, space.num_classes)
        # SNAS initialises alpha around 1 (N(1, 0.01)); shared by every cell of a kind
        self.alpha_normal = nn.Parameter(1.0 + 0.01 * torch.randn(N_EDGES, len(PRIMITIVES)))
        self.alpha_reduce = nn.Parameter(1.0 + 0.01 * torch.randn(N_EDGES, len(PRIMITIVES)))

    def alphas(self) -> dict[str, torch.Tensor]:
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, x, weights: dict[str, torch.Tensor]):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights["reduce" if cell.reduction else "normal"])
        return self.classifier(self.pool(s1).flatten(1))


# --- derivation ----------------------------------------------------------------------------------


def derive(alpha: dict[str, torch.Tensor], rule: str = "argmax") -> dict[str, Any]:
    """The child graph's JSON from alpha: SNAS's argmax (none drops the edge) or DARTS's top-2.
    A cell whose edges all take `none` keeps its strongest non-none input edge (else it has no node)."""
    doc: dict[str, Any] = {"space": "darts"}
    for kind in CELL_TYPES:
        a = alpha[kind].detach()
        ops = ["none"] * N_EDGES
        if rule == "argmax":
            for e in range(N_EDGES):
                ops[e] = PRIMITIVES[int(a[e].argmax())]
        else:
            for j in range(STEPS):
                es = [edge_index(j, i) for i in range(2 + j)]
                strength = [float(torch.cat([a[e, :NONE], a[e, NONE + 1:]]).max()) for e in es]
                for rank in sorted(range(len(es)), key=lambda r: -strength[r])[:2]:
                    row = a[es[rank]].clone()
                    row[NONE] = -float("inf")
                    ops[es[rank]] = PRIMITIVES[int(row.argmax())]
        if not _has_active(ops):
            best = max((e for e in range(N_EDGES) if EDGES[e][1] < 2),
                       key=lambda e: float(torch.cat([a[e, :NONE], a[e, NONE + 1:]]).max()))
            row = a[best].clone()
            row[NONE] = -float("inf")
            ops[best] = PRIMITIVES[int(row.argmax())]
        doc[f"{kind}_edges"] = [[ops[edge_index(j, i)] for i in range(2 + j)] for j in range(STEPS)]
    return doc


def _has_active(ops: list[str]) -> bool:
    """Does some node have a live input? (Inputs 0 and 1 are live; node j only via live states.)"""
    live = {0, 1}
    for j in range(STEPS):
        if any(ops[edge_index(j, i)] != "none" and i in live for i in range(2 + j)):
            live.add(j + 2)
    return len(live) > 2


def edge_entropy(alpha: dict[str, torch.Tensor]) -> float:
    """Mean entropy (nats) of the edges' softmax(alpha)."""
    ents = [-(torch.softmax(a.detach(), -1) * torch.log_softmax(a.detach(), -1)).sum(-1) for a in alpha.values()]
    return float(torch.cat(ents).mean())


# --- the search ----------------------------------------------------------------------------------


def search(config: SNASConfig, space: DartsSpace, data, out, table=None, measurer=None, measure_batch: int = 1,
           run_info: dict[str, Any] | None = None, show_progress: bool = True, stop_after_epoch: int | None = None,
           echo: Callable[[str], None] = lambda s: None, deploy: DartsSpace | None = None) -> dict[str, Any] | None:
    """Run (or resume) a SNAS search into run directory `out`; returns the summary.

    space: the darts space the supernet trains in (its resolution is the training resolution).
    deploy: the darts space the found cells are deployed in, where every cost is counted and every
      latency looked up and measured (default: `space`); a cell is the same at any size.
    table: a CellLatencyTable of `deploy` (needed by the latency cost; logged when given).
    measurer: measures the derived network every measure_every epochs and at the end, or None.
    """
    deploy = deploy or space
    check_cell_search(space, deploy, data, table, needs_table=config.resource == "latency")
    cost = ResourceCost(config, deploy, table)
    run = RunDir(out)
    resume = run.start({"method": "snas", **config.to_json(), "space": space.config, "deploy": deploy.config,
                        "data": data.name,
                        "target_ms": config.target if config.resource == "latency" else None,
                        "data_sizes": {s: data.size(s) for s in ("train", "val", "test")},
                        "latency_model": table.name if table is not None else None, "measure_batch": measure_batch,
                        **(run_info or {})},
                       added={"deploy": space.config,  # older runs resume as they were, on these options' defaults
                              **{k: getattr(SNASConfig, k) for k in ("cost_on", "land", "land_rounds")}})
    try:  # the run directory's lock is held until the search ends, however it ends
        return _search(run, resume, config, space, deploy, data, table, measurer, measure_batch, show_progress,
                       stop_after_epoch, echo, cost)
    finally:
        run.close()


def _search(run, resume, config, space, deploy, data, table, measurer, measure_batch, show_progress, stop_after_epoch,
            echo, cost):
    with deterministic_training(config.train_threads, config.seed):
        net = SNASSupernet(space)
        state = SearchState(
            supernet=net,
            opt_w=torch.optim.SGD(net.weight_parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay),
            opt_a=torch.optim.Adam(net.arch_parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                                   weight_decay=config.arch_weight_decay),
            data_gen=torch.Generator().manual_seed(config.seed), sample_gen=torch.Generator().manual_seed(config.seed + 1))

        def extras(arch):
            # the relaxed supernet at this epoch's temperature, without noise, beside its derived child
            tau = config.temperature(state.epoch - 1)
            soft = {k: torch.softmax(a.detach() / tau, -1) for k, a in net.alphas().items()}
            return {"edge_entropy": edge_entropy(net.alphas()),
                    "val_acc_supernet": accuracy(lambda x: net(x, soft), net, data, space.resolution),
                    "val_acc_child": _child_accuracy(net, arch, data, space.resolution)}

        arch = run_epochs(
            run, resume, state, config.epochs, lambda: _epoch(state, config, space, data, cost, show_progress),
            lambda: derive(net.alphas(), config.derive), extras, deploy, table, measurer, config.measure_every,
            measure_batch, stop_after_epoch, echo,
            lambda r: (f"loss {r['train_loss']:.3f}, child val acc {r['val_acc_child']:.3f}, {config.resource} "
                       f"{r['cost_value']:.4g}, entropy {r['edge_entropy']:.3f}"))
    if arch is None:
        return None
    landing = {}
    if config.land:
        log_probs = {k: torch.log_softmax(a.detach(), -1) for k, a in net.alphas().items()}
        arch, landing = land_search(deploy, arch, log_probs, table, config.target, measurer, measure_batch,
                                    config.land_rounds, lambda a: _child_accuracy(net, a, data, space.resolution),
                                    run.read_log(), echo)
    return finish(run, deploy, arch, table, measurer, measure_batch, config.final_sessions, config.epochs,
                  lambda d: {**_summary_head(config, d), **landing})


def _summary_head(cfg: SNASConfig, d: dict[str, Any]) -> dict[str, Any]:
    return {"method": "snas", "resource": cfg.resource, "gradient": cfg.gradient, "target": cfg.target,
            "target_ms": cfg.target if cfg.resource == "latency" else None,
            "resource_value": {"params": d["params_m"], "flops": d["macs_m"], "mac": d["mac_m"],
                               "latency": d.get("table_ms"), "mixed": None}[cfg.resource]}


def _epoch(state: SearchState, cfg: SNASConfig, space: DartsSpace, data, cost: ResourceCost, show_progress: bool):
    net, epoch = state.supernet, state.epoch
    net.train()
    tau = cfg.temperature(epoch)
    sums = {"loss": 0.0, "cost_term": 0.0, "cost_value": 0.0, "correct": 0, "n": 0}
    bar, batches, val_iter = epoch_batches(state, cfg, data, space.resolution, show_progress)
    for x, y in batches:
        if cfg.bilevel:  # alpha first, on a search-val batch (first order, as DARTS's)
            xv, yv = next(val_iter)
            z, log_z = _sample(net, tau, state.sample_gen)
            logged, value = cost.term(net.alphas(), z, log_z, tau)  # the cost as --cost-on says, logged
            state.opt_a.zero_grad(set_to_none=True)
            (F.cross_entropy(net(xv, z), yv) + logged).backward()
            state.opt_a.step()
        z, log_z = _sample(net, tau, state.sample_gen)
        logits = net(x, z)
        ce = F.cross_entropy(logits, y)
        term = torch.zeros(())  # bi-level: the weights' step takes no cost
        if not cfg.bilevel:
            term, value = cost.term(net.alphas(), z, log_z, tau)
            logged = term
        state.opt_w.zero_grad(set_to_none=True)
        state.opt_a.zero_grad(set_to_none=True)
        (ce + term).backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
        state.opt_w.step()
        if not cfg.bilevel:
            state.opt_a.step()  # one-level: theta and alpha from the same backward pass
        n = y.numel()
        sums["loss"] += ce.item() * n
        sums["cost_term"] += float(logged.detach()) * n
        sums["cost_value"] += value * n
        sums["correct"] += int((logits.argmax(1) == y).sum())
        sums["n"] += n
        bar.set_postfix(tau=f"{tau:.3g}", cost=f"{value:.4g}")
    bar.close()
    n = sums["n"]
    return {"epoch": epoch + 1, "tau": tau, "lr": state.opt_w.param_groups[0]["lr"], "train_loss": sums["loss"] / n,
            "train_acc": sums["correct"] / n, "cost_term": sums["cost_term"] / n, "cost_value": sums["cost_value"] / n}


def _sample(net: SNASSupernet, tau: float, gen: torch.Generator):
    """One concrete sample per cell kind, shared by every cell of that kind."""
    z, log_z = {}, {}
    for kind, a in net.alphas().items():
        z[kind], log_z[kind] = gumbel_softmax_sample(a, tau, gen)
    return z, log_z


def _child_accuracy(net: SNASSupernet, arch, data, resolution: int) -> float:
    """The derived child graph's validation accuracy with the supernet's weights, no retraining:
    one-hot edge weights (batch statistics: the running ones describe the relaxed mixtures)."""

    w = {k: v.float() for k, v in one_hot(arch).items()}
    return accuracy(lambda x: net(x, w), net, data, resolution)
