"""EnTranNAS and EnTranNAS-DST (Yang et al., CVPR 2021) on the darts cell space, with a latency cost.

Read from the paper (no public code; ../shared/notes/research.md section 9):

- Engine-cells (by default the first normal and the first reduction cell) hold the architecture
  parameters and compute the whole DAG with p = softmax(alpha / tau) per edge (Eq. 5), tau
  annealed per epoch, no Gumbel noise. Transit-cells compute only the sub-graph derived from the
  Engine-cells' parameters of their kind, derived again at every iteration.
- Feature sharing: operation k from state i has one weight set for every later node j, and its
  feature is computed once per cell: (n - 1) * K trainable connections instead of |E| * K.
- Bottleneck (`bottleneck` = r > 1): a 1x1 convolution takes every source state from C to C / r
  channels before its candidate operations, another takes each node back to C.
- Bi-level, first order (as DARTS): weights on search-train batches, alpha (and beta) on
  search-val batches, alternating each step.
- DST (`dst`): p_hat = p / max over node j's incoming (i, k) (Eq. 7), t_j = sigmoid(beta_j),
  q = relu(p_hat - t_j) (Eq. 8), q_hat = q / sum_k q per edge (Eq. 9); the Engine-cell uses
  q_hat, the derived set is {(i, k): q_hat > 0} (Eq. 10), so a node keeps any number of inputs
  and at least one; the architecture loss adds lambda * mean_j(-log t_j) (Eq. 11) per cell kind.
  Without DST the derivation is DARTS's: two strongest edges per node, each its argmax op.

Choices the paper leaves open, made here:
- `none` is no candidate: DST's thresholds decide which connections are kept, and DARTS's
  rule skips `none` anyway; so alpha is [14 edges x 7 ops] per cell kind.
- The darts space's child-graph form holds one op per edge. While tau is high Eq. 10 can keep
  two ops on one edge; the derived child graph then keeps the one with the larger q_hat, and
  the log counts such edges (`multi_op_edges`); as tau falls p becomes one-hot per edge and the
  count goes to 0, so the derived set is then exactly the non-zero set.
- Transit-cells use the evaluation network's ops (affine BatchNorm, pools without BatchNorm):
  with no bottleneck a Transit-cell is the darts space's `Cell` of the derived graph (tested);
  Engine-cells use DARTS's search ops (affine-free BatchNorm).
- t_j is kept <= 1 - 1e-6 so float32 never rounds it to 1 (which would cut a node's last input).

Latency (beyond the paper): the cell table's `soft` latency of the derived edges with their ops
weighted by p = softmax(alpha / tau), against a target (hinge or abs, as SNAS), times `lam`.
With DST an edge counts when q_hat is non-zero on it, exactly as in the derived network; its
liveness has the value of the hard indicator and the gradient of sum_k q (straight-through), so
the cost can also prune edges; as p becomes one-hot the term equals the derived network's table
latency (tested). Without DST the derived top-2 edges count.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.search.cellsearch import (
    accuracy,
    annealed,
    check_cell_search,
    check_training_settings,
    epoch_batches,
    finish,
    land_search,
    measured_table_target,
    run_epochs,
)
from hwnas.search.cost import COSTS, relative_cost
from hwnas.search.loop import SearchState
from hwnas.search.rundir import RunDir
from hwnas.search.train import deterministic_training
from hwnas.spaces.darts import (
    CELL_TYPES,
    N_EDGES,
    PRIMITIVES,
    STEPS,
    DartsSpace,
    FactorizedReduce,
    ReLUConvBN,
    edge_index,
    make_op,
)
from hwnas.validate import is_finite_number as num
from hwnas.validate import is_int
from hwnas.validate import require as check

CANDIDATES = tuple(op for op in PRIMITIVES if op != "none")
K = len(CANDIDATES)
SOURCES = STEPS + 1  # states 0..STEPS feed later nodes: the n - 1 sources of feature sharing
DERIVATIONS = ("top2", "dst")
T_MAX = 1.0 - 1e-6
assert PRIMITIVES[0] == "none"  # the table's weights put `none` in column 0


def node_edges(j: int) -> slice:
    """Rows of alpha of the edges into intermediate node j (0-based): contiguous in DARTS's order."""
    return slice(edge_index(j, 0), edge_index(j, 0) + 2 + j)


def default_engine_cells(space: DartsSpace) -> tuple[int, ...]:
    """The paper's placement: the first normal cell and the first reduction cell."""
    first_normal = next((k for k in range(space.cells) if k not in space.reductions), None)
    first_reduce = space.reductions[0] if space.reductions else None
    return tuple(sorted(k for k in (first_normal, first_reduce) if k is not None))


@dataclass(frozen=True)
class EnTranNASConfig:
    dst: bool = False
    dst_lambda: float = 0.1  # lambda of Eq. 11 (the paper's visualisation: 0.1)
    derive: str | None = None  # None: "dst" with dst, else "top2"
    engine_cells: tuple[int, ...] | None = None  # None: the first normal and the first reduction cell
    bottleneck: int = 1  # channel reduction ratio before the candidate ops (the paper: 4); 1: none
    target: float | None = None  # ms, under the cell table
    lam: float = 1.0  # weight of the latency cost
    penalty: str = "abs"
    calibrate: bool = True  # at each measurement, the target in table units = target * table / measured
    # After the search, as SNAS's --land (`cellsearch.land_search`): the derived edges' ops changed,
    # fewest nats of p = softmax(alpha / tau) first, until the table (re-aimed at the measured
    # latency) reads the target, the first round aimed where the search's last usable measurement
    # puts the table. The derived topology stays: `none` is no candidate here.
    land: bool = False
    land_rounds: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025  # DARTS: SGD 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 0.1  # Adam; DARTS's 3e-4 is for ~20k steps, a minutes-long run has ~100 (as SNAS here)
    arch_weight_decay: float = 1e-3
    tau: float = 1.0
    tau_min: float = 0.1
    anneal: str = "exp"
    grad_clip: float = 5.0
    seed: int = 0
    measure_every: int = 0
    final_sessions: int = 3
    train_threads: int = 1

    def __post_init__(self):
        if self.derive is None:
            object.__setattr__(self, "derive", "dst" if self.dst else "top2")
        for name, choices in (("derive", DERIVATIONS), ("penalty", COSTS), ("anneal", ("linear", "exp"))):
            v = getattr(self, name)
            if v not in choices:
                m = difflib.get_close_matches(str(v), choices, n=1)
                raise HwnasError(f"unknown {name} {v!r}{f' (did you mean {m[0]!r}?)' if m else ''}; "
                                 f"known: {', '.join(choices)}")
        check(not (self.dst and self.derive != "dst"),
              f"--dst derives the nodes whose coefficients stay above their thresholds (Eq. 10); "
              f"--derive {self.derive} contradicts it")
        check(not (self.derive == "dst" and not self.dst), "--derive dst needs --dst (the thresholds it derives by)")
        check(num(self.dst_lambda) and self.dst_lambda >= 0, f"the DST lambda must be >= 0, got {self.dst_lambda!r}")
        check(num(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam!r}")
        check(self.target is None or (num(self.target) and self.target > 0), f"target must be positive, got {self.target!r}")
        check(not self.land or self.target is not None, "landing (--land) needs a --target")
        check(is_int(self.bottleneck) and self.bottleneck >= 1, f"the bottleneck ratio must be an integer >= 1, got {self.bottleneck!r}")
        if self.engine_cells is not None:
            cells = self.engine_cells
            check(isinstance(cells, (tuple, list)) and len(cells) > 0 and all(is_int(c) for c in cells),
                  f"engine cells must be a non-empty list of cell positions, got {cells!r}")
            check(len(set(cells)) == len(cells), f"engine cells list a position twice: {list(cells)}")
            object.__setattr__(self, "engine_cells", tuple(sorted(cells)))
        check_training_settings(self)

    @property
    def method(self) -> str:
        return "entrannas-dst" if self.dst else "entrannas"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["engine_cells"] = list(self.engine_cells) if self.engine_cells is not None else None
        return doc

    def temperature(self, epoch: int) -> float:
        return annealed(self.tau, self.tau_min, epoch, self.epochs, self.anneal)

    def engines(self, space: DartsSpace) -> tuple[int, ...]:
        """The Engine-cell positions in `space`, checked: in range, and every cell kind of the space
        has one (else its alpha would never be trained)."""
        cells = self.engine_cells if self.engine_cells is not None else default_engine_cells(space)
        bad = [c for c in cells if not 0 <= c < space.cells]
        if bad:
            raise HwnasError(f"engine cell {bad[0]} is out of range: {space.cells} cells are at positions 0..{space.cells - 1}")
        kinds = {"reduce" if k in space.reductions else "normal" for k in range(space.cells)}
        have = {"reduce" if k in space.reductions else "normal" for k in cells}
        if kinds - have:
            missing = sorted(kinds - have)[0]
            where = [k for k in range(space.cells) if (k in space.reductions) == (missing == "reduce")]
            raise HwnasError(f"no engine cell is a {missing} cell (those are at {where}), so its architecture "
                             f"would never be searched; add one of them to the engine cells")
        return tuple(cells)

    def check_space(self, space: DartsSpace) -> None:
        self.engines(space)
        r = self.bottleneck
        for row in space.cell_plan():
            if row["c"] % r or row["c"] // r < 2:
                raise HwnasError(f"bottleneck ratio {r} does not divide cell {row['cell']}'s {row['c']} channels into "
                                 f"2 or more (channels {space.channels} doubling at each reduction)")


# --- coefficients and derivation ---------------------------------------------------------------------


def thresholds(beta: torch.Tensor) -> torch.Tensor:
    """t_j = sigmoid(beta_j), kept below 1 (see the module's notes)."""
    return torch.sigmoid(beta).clamp(max=T_MAX)


def dst_coefficients(alpha: torch.Tensor, beta: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(q_hat, q) of one cell kind, both [14, K]: Eqs. 5, 7, 8 and 9."""
    p = torch.softmax(alpha / tau, -1)
    t = thresholds(beta)
    rows = []
    for j in range(STEPS):
        pj = p[node_edges(j)]
        rows.append(torch.relu(pj / pj.max() - t[j]))  # Eq. 7 then Eq. 8
    q = torch.cat(rows)
    s = q.sum(-1, keepdim=True)
    return q / torch.where(s > 0, s, torch.ones_like(s)), q  # Eq. 9; an edge with q = 0 stays 0


def derive_cell(coef: torch.Tensor, rule: str) -> list[str]:
    """One cell's edges (op names, `none` for no edge) from its coefficients [14, K].
    dst: every edge with a non-zero coefficient, with its largest op (Eq. 10 in child-graph form);
    top2: DARTS's two strongest edges per node, each with its strongest op."""
    coef = coef.detach()
    ops = ["none"] * N_EDGES
    for j in range(STEPS):
        rows = range(node_edges(j).start, node_edges(j).stop)
        keep = [e for e in rows if float(coef[e].max()) > 0] if rule == "dst" else \
            sorted(rows, key=lambda e: -float(coef[e].max()))[:2]
        if not keep:
            raise HwnasError(f"node {j + 2} kept no input: the coefficients are not DST's")  # Eq. 7-8 keep one
        for e in keep:
            ops[e] = CANDIDATES[int(coef[e].argmax())]
    return ops


def derive(coefs: dict[str, torch.Tensor], rule: str) -> dict[str, Any]:
    """The derived architecture's child-graph JSON from each cell kind's coefficients."""
    doc: dict[str, Any] = {"space": "darts"}
    for kind in CELL_TYPES:
        ops = derive_cell(coefs[kind], rule)
        doc[f"{kind}_edges"] = [[ops[edge_index(j, i)] for i in range(2 + j)] for j in range(STEPS)]
    return doc


def one_hot_coefficients(arch) -> dict[str, torch.Tensor]:
    """The derived graph as coefficients: 1 on each edge's op, 0 elsewhere ([14, K] per kind)."""
    out = {}
    for kind in CELL_TYPES:
        w = torch.zeros(N_EDGES, K)
        for e, op in enumerate(arch.cell(kind).edges):
            if op != "none":
                w[e, CANDIDATES.index(op)] = 1.0
        out[kind] = w
    return out


def table_weights(coef: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """The cell table's edge weights [14, 8] (`none` first) from op coefficients [14, K] and edge
    liveness [14] (0/1 in value): a live edge's ops weighted by coef, a dead edge all `none`."""
    live = live.to(torch.float64)
    return torch.cat([(1.0 - live)[:, None], coef.to(torch.float64) * live[:, None]], dim=1)


def in_degrees(arch) -> dict[str, list[int]]:
    """Number of inputs of each intermediate node, per cell kind."""
    return {kind: [len(arch.cell(kind).inputs(j)) for j in range(STEPS)] for kind in CELL_TYPES}


# --- the network -----------------------------------------------------------------------------------


def _stride(reduction: bool, source: int) -> int:
    return 2 if reduction and source < 2 else 1


class _SharedCell(nn.Module):
    """Preprocessing, optional bottleneck and one op per (source state, candidate) shared by all
    later nodes; `feature` computes each (source, op) once per forward (the cache is per call)."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, bottleneck: int,
                 affine: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, affine)
        self.pre1 = ReLUConvBN(c_p, c, affine)
        cb = c // bottleneck
        self.squeeze = (nn.ModuleList(ReLUConvBN(c, cb, affine) for _ in range(SOURCES)) if bottleneck > 1 else None)
        self.expand = (nn.ModuleList(nn.Sequential(nn.Conv2d(cb, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine))
                                     for _ in range(STEPS)) if bottleneck > 1 else None)
        self.ops = nn.ModuleDict({f"{i}_{op}": make_op(op, cb, _stride(reduction, i), affine)
                                  for i in range(SOURCES) for op in CANDIDATES})

    def feature(self, cache: dict, states: dict[int, torch.Tensor], i: int, op: str) -> torch.Tensor:
        if (i, op) not in cache:
            if i not in cache:  # the source's bottleneck, once per source
                cache[i] = self.squeeze[i](states[i]) if self.squeeze is not None else states[i]
            cache[(i, op)] = self.ops[f"{i}_{op}"](cache[i])
        return cache[(i, op)]

    def node(self, j: int, total: torch.Tensor) -> torch.Tensor:
        return self.expand[j](total) if self.expand is not None else total


class EngineCell(_SharedCell):
    """The whole DAG: node j = sum over (i, k) of coef[i->j, k] * o_k(x_i); zero coefficients are
    skipped (with DST these are exactly the connections the derived cell lacks)."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, bottleneck):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, bottleneck, affine=False)

    def forward(self, s0, s1, coef: torch.Tensor):
        states = {0: self.pre0(s0), 1: self.pre1(s1)}
        cache: dict = {}
        nonzero = (coef.detach() != 0).tolist()
        for j in range(STEPS):
            total = None
            for i in range(2 + j):
                e = edge_index(j, i)
                for k, op in enumerate(CANDIDATES):
                    if nonzero[e][k]:
                        y = coef[e, k] * self.feature(cache, states, i, op)
                        total = y if total is None else total + y
            if total is None:
                raise HwnasError(f"node {j + 2} of an engine cell has no input")
            states[j + 2] = self.node(j, total)
        return torch.cat([states[j + 2] for j in range(STEPS)], dim=1)


class TransitCell(_SharedCell):
    """Only the derived graph: node j = sum over its inputs (i, op) of o_op(x_i), no coefficients."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, bottleneck):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, bottleneck, affine=True)

    def forward(self, s0, s1, graph):
        used0, used1 = graph.used_inputs()
        states: dict[int, torch.Tensor] = {}
        if used0:
            states[0] = self.pre0(s0)
        if used1:
            states[1] = self.pre1(s1)
        cache: dict = {}
        for j in range(STEPS):
            ins = graph.inputs(j)
            if ins:
                states[j + 2] = self.node(j, sum(self.feature(cache, states, i, op) for i, op in ins))
        return torch.cat([states[k] for k in graph.concat], dim=1)


class EnTranNASNet(nn.Module):
    def __init__(self, space: DartsSpace, engine_cells: tuple[int, ...], bottleneck: int = 1):
        super().__init__()
        c = space.channels
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        self.cells = nn.ModuleList()
        self.kinds, self.engine = [], []
        c_pp = c_p = 3 * c
        reduction_prev = False
        for row in space.cell_plan():
            reduction, engine = row["kind"] == "reduce", row["cell"] in engine_cells
            cls = EngineCell if engine else TransitCell
            self.cells.append(cls(c_pp, c_p, row["c"], reduction, reduction_prev, bottleneck))
            self.kinds.append(row["kind"])
            self.engine.append(engine)
            # derived graphs keep every node (each has an input), so a cell always outputs 4 C
            c_pp, c_p, reduction_prev = c_p, STEPS * row["c"], reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, space.num_classes)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(N_EDGES, K))  # DARTS: 1e-3 * randn
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(N_EDGES, K))
        self.beta_normal = nn.Parameter(torch.zeros(STEPS))  # t = 0.5: every connection starts active
        self.beta_reduce = nn.Parameter(torch.zeros(STEPS))
        # The latency term's target in the table's units, set by calibration (NaN: the target itself);
        # a buffer, so the checkpoint keeps it.
        self.register_buffer("table_target", torch.tensor(float("nan"), dtype=torch.float64))

    def alphas(self) -> dict[str, torch.Tensor]:
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}

    def betas(self) -> dict[str, torch.Tensor]:
        return {"normal": self.beta_normal, "reduce": self.beta_reduce}

    def arch_parameters(self, dst: bool) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce] + ([self.beta_normal, self.beta_reduce] if dst else [])

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters(True)}
        return [p for p in self.parameters() if id(p) not in ids]

    def coefficients(self, tau: float, dst: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """({kind: Engine coefficients [14, K]}, {kind: q [14, K]}, the latter for DST only)."""
        coefs, qs = {}, {}
        for kind in CELL_TYPES:
            if dst:
                coefs[kind], qs[kind] = dst_coefficients(self.alphas()[kind], self.betas()[kind], tau)
            else:
                coefs[kind] = torch.softmax(self.alphas()[kind] / tau, -1)
        return coefs, qs

    def op_probabilities(self, tau: float) -> dict[str, torch.Tensor]:
        """p = softmax(alpha / tau) per edge (Eq. 5), [14, K] per kind: the latency term's op weights."""
        return {kind: torch.softmax(a / tau, -1) for kind, a in self.alphas().items()}

    def forward(self, x, coefs: dict[str, torch.Tensor], graphs: dict[str, Any]):
        s0 = s1 = self.stem(x)
        for cell, kind, engine in zip(self.cells, self.kinds, self.engine):
            s0, s1 = s1, cell(s0, s1, coefs[kind] if engine else graphs[kind])
        return self.classifier(self.pool(s1).flatten(1))


# --- the architecture loss's latency and sparsity terms --------------------------------------------------


def liveness(coefs: dict[str, torch.Tensor], qs: dict[str, torch.Tensor], arch) -> dict[str, torch.Tensor]:
    """Per kind, [14] edge liveness of the derived network; with DST the hard indicator of
    sum_k q > 0 in value and sum_k q in gradient (straight-through)."""
    out = {}
    for kind in CELL_TYPES:
        if qs:
            s = qs[kind].sum(-1)
            out[kind] = (s > 0).to(s.dtype) + (s - s.detach())
        else:
            out[kind] = torch.tensor([float(op != "none") for op in arch.cell(kind).edges])
    return out


def expected_latency(table, probs, qs, arch) -> torch.Tensor:
    """The cell table's latency of the derived edges, each with its ops weighted by p (`probs`,
    softmax(alpha / tau)). Not q_hat: an edge that is its node's only connection has q_hat = 1
    whatever alpha is, so its op would get no latency gradient (measured: a DST search that cut
    every node to one input at epoch 1 then kept its ops for 10 epochs, 26% over the target). At
    convergence p is one-hot on the op the derivation keeps, so the term is the table latency."""
    live = liveness(probs, qs, arch)
    return table.soft({kind: table_weights(probs[kind], live[kind]) for kind in CELL_TYPES})


def sparsity_regulariser(net: EnTranNASNet) -> torch.Tensor:
    """Eq. 11's term without lambda: mean_j(-log t_j), summed over the cell kinds."""
    return sum(-torch.log(thresholds(b)).mean() for b in net.betas().values())


# --- the search ------------------------------------------------------------------------------------


def search(config: EnTranNASConfig, space: DartsSpace, data, out, table=None, measurer=None, measure_batch: int = 1,
           run_info: dict[str, Any] | None = None, show_progress: bool = True, stop_after_epoch: int | None = None,
           echo: Callable[[str], None] = lambda s: None, deploy: DartsSpace | None = None) -> dict[str, Any] | None:
    """Run (or resume) an EnTranNAS(-DST) search into run directory `out`; returns the summary.

    space: the darts space the supernet trains in; deploy: the one the found cells are deployed
      in, where latency is looked up and measured (default: `space`).
    table: a CellLatencyTable of `deploy` (needed with a target; logged when given).
    measurer: measures the derived network every measure_every epochs and at the end, or None.
    """
    deploy = deploy or space
    config.check_space(space)
    check_cell_search(space, deploy, data, table, needs_table=config.target is not None)
    engines = config.engines(space)
    run = RunDir(out)
    resume = run.start({"method": config.method, **config.to_json(), "engine_cells_used": list(engines),
                        "space": space.config, "deploy": deploy.config, "data": data.name,
                        "target_ms": config.target,
                        "data_sizes": {s: data.size(s) for s in ("train", "val", "test")},
                        "latency_model": table.name if table is not None else None, "measure_batch": measure_batch,
                        **(run_info or {})},
                       added={"deploy": space.config,  # older runs resume as they were, on these options' defaults
                              **{k: getattr(EnTranNASConfig, k) for k in ("land", "land_rounds")}})
    try:  # the run directory's lock is held until the search ends, however it ends
        return _search(run, resume, config, space, deploy, engines, data, table, measurer, measure_batch,
                       show_progress, stop_after_epoch, echo)
    finally:
        run.close()


def _search(run, resume, config, space, deploy, engines, data, table, measurer, measure_batch, show_progress,
            stop_after_epoch, echo):
    with deterministic_training(config.train_threads, config.seed):
        net = EnTranNASNet(space, engines, config.bottleneck)
        state = SearchState(
            supernet=net,
            opt_w=torch.optim.SGD(net.weight_parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay),
            opt_a=torch.optim.Adam(net.arch_parameters(config.dst), lr=config.arch_lr, betas=(0.5, 0.999),
                                   weight_decay=config.arch_weight_decay),
            data_gen=torch.Generator().manual_seed(config.seed))

        def current():
            tau = config.temperature(max(state.epoch - 1, 0))
            with torch.no_grad():
                coefs, qs = net.coefficients(tau, config.dst)
            return tau, coefs, qs

        def extras(arch):
            tau, coefs, qs = current()
            graphs = {k: arch.cell(k) for k in CELL_TYPES}
            d = {"in_degrees": in_degrees(arch),
                 "val_acc_supernet": accuracy(lambda x: net(x, coefs, graphs), net, data, space.resolution),
                 "val_acc_derived": derived_accuracy(net, arch, data, space.resolution),
                 "op_entropy": float(torch.cat([-(c * c.clamp_min(1e-30).log()).sum(-1) for c in
                                                (torch.softmax(a.detach(), -1) for a in net.alphas().values())]).mean())}
            if config.dst:
                d["thresholds"] = {k: thresholds(b.detach()).tolist() for k, b in net.betas().items()}
                d["multi_op_edges"] = sum(int(((qs[k] > 0).sum(-1) > 1).sum()) for k in CELL_TYPES)
            if table is not None:
                with torch.no_grad():
                    d["expected_ms"] = float(expected_latency(table, net.op_probabilities(tau), qs, arch))
            return d

        def derived():
            _, coefs, _ = current()
            return derive(coefs, config.derive)

        def calibrate(record):
            """The table's error at the derived network, taken out of the target: the latency term
            then aims the table at target * table / measured. A flagged measurement is not used."""

            aim = (measured_table_target([record], config.target)
                   if config.calibrate and config.target is not None else None)
            if aim is not None:
                net.table_target.fill_(aim)
                record["table_target_ms"] = float(net.table_target)

        arch = run_epochs(
            run, resume, state, config.epochs, lambda: _epoch(state, config, space, data, table, show_progress),
            derived, extras, deploy, table, measurer, config.measure_every, measure_batch, stop_after_epoch, echo,
            lambda r: (f"loss {r['train_loss']:.3f}, val acc supernet {r['val_acc_supernet']:.3f} derived "
                       f"{r['val_acc_derived']:.3f}, in-degrees {r['in_degrees']['normal']}/{r['in_degrees']['reduce']}"),
            on_measured=calibrate if table is not None else None)
    if arch is None:
        return None
    landing = {}
    if config.land:
        tau, _, _ = current()
        log_probs = {k: torch.cat([torch.full((N_EDGES, 1), -torch.inf), torch.log_softmax(a.detach() / tau, -1)], 1)
                     for k, a in net.alphas().items()}  # `none` first, as PRIMITIVES: never a candidate
        arch, landing = land_search(deploy, arch, log_probs, table, config.target, measurer, measure_batch,
                                    config.land_rounds, lambda a: derived_accuracy(net, a, data, space.resolution),
                                    run.read_log(), echo)
    return finish(run, deploy, arch, table, measurer, measure_batch, config.final_sessions, config.epochs,
                  lambda d: {"method": config.method, "dst": config.dst, "resource": "latency", "target": config.target,
                             "target_ms": config.target, "resource_value": d.get("table_ms"),
                             "engine_cells": list(engines), "in_degrees": in_degrees(arch), **landing})


def derived_accuracy(net: EnTranNASNet, arch, data, resolution: int) -> float:
    """A child graph's validation accuracy with the supernet's weights: every cell computes the
    child's edges only (Engine-cells by one-hot coefficients)."""
    graphs = {k: arch.cell(k) for k in CELL_TYPES}
    hard = one_hot_coefficients(arch)
    return accuracy(lambda x: net(x, hard, graphs), net, data, resolution)


def _epoch(state: SearchState, cfg: EnTranNASConfig, space: DartsSpace, data, table, show_progress: bool):
    net, epoch = state.supernet, state.epoch
    net.train()
    tau = cfg.temperature(epoch)
    sums = {"ce": 0.0, "val_loss": 0.0, "latency_term": 0.0, "expected_ms": 0.0, "sparsity": 0.0, "correct": 0, "n": 0}
    bar, batches, val_iter = epoch_batches(state, cfg, data, space.resolution, show_progress)
    for x, y in batches:
        xv, yv = next(val_iter)
        r = train_step(net, state.opt_w, state.opt_a, cfg, space, table, tau, x, y, xv, yv)
        n = y.numel()
        for key in ("ce", "val_loss", "latency_term", "expected_ms", "sparsity"):
            sums[key] += r[key] * n
        sums["correct"] += int((r["logits"].argmax(1) == y).sum())
        sums["n"] += n
        bar.set_postfix(tau=f"{tau:.3g}", ms=f"{r['expected_ms']:.4g}")
    bar.close()
    n = sums["n"]
    return {"epoch": epoch + 1, "tau": tau, "lr": state.opt_w.param_groups[0]["lr"], "train_loss": sums["ce"] / n,
            "train_acc": sums["correct"] / n, "arch_val_loss": sums["val_loss"] / n,
            "latency_term": sums["latency_term"] / n, "step_expected_ms": sums["expected_ms"] / n,
            "sparsity_term": sums["sparsity"] / n}


def train_step(net: EnTranNASNet, opt_w, opt_a, cfg: EnTranNASConfig, space: DartsSpace, table, tau: float,
               x, y, xv, yv) -> dict[str, Any]:
    """One bi-level step: the architecture on a search-val batch (first order, as DARTS's), then
    the weights on a search-train batch under the architecture derived again."""
    coefs, qs = net.coefficients(tau, cfg.dst)
    arch = space.validate(derive(coefs, cfg.derive))
    val_loss = F.cross_entropy(net(xv, coefs, {k: arch.cell(k) for k in CELL_TYPES}), yv)
    loss_a = val_loss
    sparsity = sparsity_regulariser(net) if cfg.dst else torch.zeros(())
    if cfg.dst:
        loss_a = loss_a + cfg.dst_lambda * sparsity
    lat_term, lat = torch.zeros(()), float("nan")
    if table is not None:
        expected = expected_latency(table, net.op_probabilities(tau), qs, arch)
        lat = float(expected.detach())
        if cfg.target is not None and cfg.lam > 0:
            target = cfg.target if torch.isnan(net.table_target) else float(net.table_target)
            lat_term = cfg.lam * relative_cost(expected / target, cfg.penalty).to(torch.float32)
            loss_a = loss_a + lat_term
    opt_a.zero_grad(set_to_none=True)
    loss_a.backward()
    opt_a.step()
    with torch.no_grad():
        coefs, _ = net.coefficients(tau, cfg.dst)
    arch = space.validate(derive(coefs, cfg.derive))
    logits = net(x, coefs, {k: arch.cell(k) for k in CELL_TYPES})
    ce = F.cross_entropy(logits, y)
    opt_w.zero_grad(set_to_none=True)
    ce.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
    opt_w.step()
    return {"ce": ce.item(), "val_loss": val_loss.item(), "latency_term": float(lat_term.detach()), "expected_ms": lat,
            "sparsity": float(sparsity.detach()), "logits": logits.detach()}
