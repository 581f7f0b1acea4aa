"""DARTS's CNN cell space (Liu et al., ICLR 2019), as facts from its authors' code describe it.

A cell has two inputs (states 0 and 1: the outputs of the cells k-2 and k-1, each
preprocessed to C channels) and four intermediate nodes (states 2..5). Node j may take an
edge from every earlier state: 2+3+4+5 = 14 edges, each with one of 8 ops. The cell's output
concatenates its output nodes. Reduction cells (at 1/3 and 2/3 of the depth by default)
double C and apply their input edges at stride 2.

Architectures are JSON in two forms:

  genotype (DARTS's notation): {"normal": [[op, input], ...8 pairs: 2 per node], "normal_concat": [2, 3, 4, 5],
                                "reduce": [...], "reduce_concat": [...]}
  child graph (SNAS's):        {"normal_edges": [[op from 0, op from 1], [3 ops], [4 ops], [5 ops]],
                                "reduce_edges": [...]}  (optional "normal_concat" / "reduce_concat")

`none` drops an edge, so in a child graph a node has 0-4 inputs. A node is active when one
of its edges comes from an active state (states 0 and 1 are); a child graph's output is the
concat of its active nodes unless a concat is given. The canonical JSON (`to_json`) is the
child-graph form with the concat written out, so both forms of one cell hash alike.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.jsonutil import content_hash
from hwnas.spaces import register_space
from hwnas.spaces.base import SearchSpace

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
STEPS = 4  # intermediate nodes per cell
N_EDGES = sum(2 + j for j in range(STEPS))  # 14
CELL_TYPES = ("normal", "reduce")


def edge_index(node: int, source: int) -> int:
    """Row of edge source -> intermediate node `node` (0-based), in DARTS's alpha order."""
    return sum(2 + t for t in range(node)) + source


EDGES = tuple((j, i) for j in range(STEPS) for i in range(2 + j))  # (node, source) per edge index


# --- architectures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellGraph:
    edges: tuple[str, ...]  # N_EDGES op names in edge order; edges from inactive states are "none"
    concat: tuple[int, ...]  # output states (2..5)

    def inputs(self, node: int) -> list[tuple[int, str]]:
        """(source state, op) of the live edges into intermediate node `node` (0-based)."""
        return [(i, self.edges[edge_index(node, i)]) for i in range(2 + node)
                if self.edges[edge_index(node, i)] != "none"]

    @property
    def active(self) -> tuple[int, ...]:
        """Intermediate states (2..5) with at least one live input."""
        return tuple(2 + j for j in range(STEPS) if self.inputs(j))

    def used_inputs(self) -> tuple[bool, bool]:
        return tuple(any(self.edges[edge_index(j, i)] != "none" for j in range(STEPS)) for i in (0, 1))

    def edges_json(self) -> list[list[str]]:
        return [[self.edges[edge_index(j, i)] for i in range(2 + j)] for j in range(STEPS)]

    def genotype(self) -> list[list[Any]] | None:
        """DARTS's (op, input) pairs, where every node has exactly two inputs; else None."""
        pairs = []
        for j in range(STEPS):
            ins = self.inputs(j)
            if len(ins) != 2:
                return None
            pairs.extend([op, i] for i, op in ins)
        return pairs


@dataclass(frozen=True)
class DartsArch:
    normal: CellGraph
    reduce: CellGraph

    def cell(self, kind: str) -> CellGraph:
        return self.normal if kind == "normal" else self.reduce

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"space": "darts"}
        for kind in CELL_TYPES:
            doc[f"{kind}_edges"] = self.cell(kind).edges_json()
            doc[f"{kind}_concat"] = list(self.cell(kind).concat)
        return doc

    def genotype(self) -> dict[str, Any] | None:
        """DARTS's notation when both cells have two inputs per node, else None."""
        doc = {}
        for kind in CELL_TYPES:
            pairs = self.cell(kind).genotype()
            if pairs is None:
                return None
            doc[kind], doc[f"{kind}_concat"] = pairs, list(self.cell(kind).concat)
        return doc

    @property
    def hash(self) -> str:
        return content_hash(self.to_json())


def _op_name(op: Any, where: str) -> str:
    if op not in PRIMITIVES:
        match = difflib.get_close_matches(str(op), PRIMITIVES, n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise HwnasError(f"unknown op {op!r} at {where}{hint}; known: {', '.join(PRIMITIVES)}")
    return op


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _cell_from_genotype(kind: str, pairs: Any) -> list[str]:
    if not isinstance(pairs, list) or len(pairs) != 2 * STEPS:
        raise HwnasError(f"{kind}: a genotype lists {2 * STEPS} (op, input) pairs, two per node; "
                         f"got {len(pairs) if isinstance(pairs, list) else type(pairs).__name__}")
    edges = ["none"] * N_EDGES
    for k, pair in enumerate(pairs):
        node = k // 2
        where = f"{kind} pair {k} (node {node + 2})"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise HwnasError(f"{where}: expected [op, input], got {pair!r}")
        op, src = _op_name(pair[0], where), pair[1]
        if not _is_int(src) or not 0 <= src <= STEPS + 1:
            raise HwnasError(f"{where}: input {src!r} out of range; states are 0..{STEPS + 1}")
        if src >= node + 2:  # edges run from earlier states only; a later one would close a cycle
            raise HwnasError(f"{where}: input {src} is not an earlier state, so it would make a cycle "
                             f"(node {node + 2} takes inputs 0..{node + 1})")
        e = edge_index(node, src)
        if edges[e] != "none":
            raise HwnasError(f"{where}: node {node + 2} takes input {src} twice; a cell has one op per edge")
        edges[e] = op
    return edges


def _cell_from_edges(kind: str, rows: Any) -> list[str]:
    if not isinstance(rows, list) or len(rows) != STEPS:
        raise HwnasError(f"{kind}_edges: expected {STEPS} lists (one per node 2..{STEPS + 1}) of ops, one per earlier state")
    edges = []
    for j, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 2 + j:
            raise HwnasError(f"{kind}_edges: node {j + 2} takes {2 + j} ops (from states 0..{j + 1}), got {row!r}")
        edges.extend(_op_name(op, f"{kind} edge {i}->{j + 2}") for i, op in enumerate(row))
    return edges


def _cell(kind: str, edges: list[str], concat: Any) -> CellGraph:
    # Activity: a node is live if an edge reaches it from a live state; edges from dead states drop.
    live = {0, 1}
    for j in range(STEPS):
        for i in range(2 + j):
            e = edge_index(j, i)
            if edges[e] != "none" and i not in live:
                edges[e] = "none"
        if any(edges[edge_index(j, i)] != "none" for i in range(2 + j)):
            live.add(j + 2)
    active = sorted(live - {0, 1})
    if not active:
        raise HwnasError(f"{kind} cell has no active node: every edge is none")
    if concat is None:
        return CellGraph(tuple(edges), tuple(active))
    if not isinstance(concat, list) or not concat or not all(_is_int(c) for c in concat):
        raise HwnasError(f"{kind}_concat must be a non-empty list of nodes 2..{STEPS + 1}, got {concat!r}")
    if len(set(concat)) != len(concat):
        raise HwnasError(f"{kind}_concat lists a node twice: {concat}")
    for c in concat:
        if not 2 <= c <= STEPS + 1:
            raise HwnasError(f"{kind}_concat: node {c} out of range; intermediate nodes are 2..{STEPS + 1}")
        if c not in live:
            raise HwnasError(f"{kind}_concat: node {c} has no input (every edge into it is none)")
    # Every active node must reach the output, or it is computed for nothing.
    reaches = set(concat)
    for j in reversed(range(STEPS)):
        if j + 2 in reaches:
            reaches.update(i for i in range(2, 2 + j) if edges[edge_index(j, i)] != "none")
    dead = [n for n in active if n not in reaches]
    if dead:
        raise HwnasError(f"{kind} cell: node {dead[0]} has no path to the output (concat {sorted(concat)})")
    return CellGraph(tuple(edges), tuple(sorted(concat)))


def parse_arch(doc: Any) -> DartsArch:
    if isinstance(doc, DartsArch):
        return doc
    if not isinstance(doc, dict):
        raise HwnasError(f"a darts architecture is a JSON object, got {type(doc).__name__}")
    if doc.get("space", "darts") != "darts":
        raise HwnasError(f"architecture is for space {doc.get('space')!r}, not darts")
    genotype = "normal" in doc or "reduce" in doc
    graph = "normal_edges" in doc or "reduce_edges" in doc
    if genotype == graph:
        raise HwnasError("a darts architecture has either normal/reduce (genotype) or normal_edges/reduce_edges "
                         "(child graph)" + (", not both" if genotype else ""))
    allowed = {"space", "normal_concat", "reduce_concat"} | (
        {"normal", "reduce"} if genotype else {"normal_edges", "reduce_edges"})
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise HwnasError(f"unknown key {unknown[0]!r} in darts architecture; expected {', '.join(sorted(allowed))}")
    cells = {}
    for kind in CELL_TYPES:
        key = kind if genotype else f"{kind}_edges"
        if key not in doc:
            raise HwnasError(f"darts architecture lacks {key!r}")
        edges = _cell_from_genotype(kind, doc[key]) if genotype else _cell_from_edges(kind, doc[key])
        concat = doc.get(f"{kind}_concat", list(range(2, 2 + STEPS)) if genotype else None)
        cells[kind] = _cell(kind, edges, concat)
    return DartsArch(cells["normal"], cells["reduce"])


# Reference genotypes from DARTS's public code (cnn/genotypes.py).
REFERENCES: dict[str, dict[str, Any]] = {
    "darts-v1": {
        "normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 0], ["sep_conv_3x3", 1],
                   ["skip_connect", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 2]],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 0],
                   ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["avg_pool_3x3", 0]],
        "reduce_concat": [2, 3, 4, 5],
    },
    "darts-v2": {
        "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
                   ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
                   ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
        "reduce_concat": [2, 3, 4, 5],
    },
}


# --- ops (DARTS's operations.py, by its description) -----------------------------------------------


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class FactorizedReduce(nn.Module):
    """Halve H and W with two 1x1 stride-2 convs, the second on the input shifted by one pixel."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


def _dw_pw(c: int, k: int, stride: int, dilation: int, affine: bool) -> list[nn.Module]:
    pad = dilation * (k - 1) // 2
    return [nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine)]


class Zero(nn.Module):
    """`none` in the supernet: zeros of the edge's output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def make_op(op: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    if op == "none":
        return Zero(stride)
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride, 1) if op == "max_pool_3x3"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        # The search supernet normalises pools (affine-free BN); the evaluation network does not.
        return pool if affine else nn.Sequential(pool, nn.BatchNorm2d(c, affine=False))
    if op == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    k = int(op[-1])
    if op.startswith("sep_conv"):
        return nn.Sequential(*_dw_pw(c, k, stride, 1, affine), *_dw_pw(c, k, 1, 1, affine))
    if op.startswith("dil_conv"):
        return nn.Sequential(*_dw_pw(c, k, stride, 2, affine))
    raise HwnasError(f"unknown op {op!r}")


def op_costs(op: str, c: int, stride: int, h: int) -> dict[str, float]:
    """Parameters, MACs and memory access cost of one edge op (evaluation form, affine BN) on a
    C x h x h input. MAC (memory access cost) is ShuffleNet V2's: per layer, the input and output
    activations read and written plus the weights; an op sums its layers. Identity reads and
    writes its tensor once each; `none` costs nothing."""
    ho = h // stride
    if op == "none":
        return {"params": 0, "macs": 0, "mac": 0}
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return {"params": 0, "macs": 0, "mac": c * h * h + c * ho * ho}
    if op == "skip_connect":
        if stride == 1:
            return {"params": 0, "macs": 0, "mac": 2 * c * h * h}
        return factorized_reduce_costs(c, c, h)
    k = int(op[-1])
    dw, pw = c * k * k, c * c
    if op.startswith("sep_conv"):
        # dw (stride) + pw, then dw + pw at the output size; two BNs of 2C affine parameters
        mac = (c * h * h + c * ho * ho + dw) + (2 * c * ho * ho + pw) + 2 * (2 * c * ho * ho) + dw + pw
        return {"params": 2 * (dw + pw + 2 * c), "macs": 2 * (dw + pw) * ho * ho, "mac": mac}
    mac = (c * h * h + c * ho * ho + dw) + (2 * c * ho * ho + pw)
    return {"params": dw + pw + 2 * c, "macs": (dw + pw) * ho * ho, "mac": mac}


def relu_conv_bn_costs(c_in: int, c_out: int, h: int) -> dict[str, float]:
    return {"params": c_in * c_out + 2 * c_out, "macs": c_in * c_out * h * h,
            "mac": c_in * h * h + c_out * h * h + c_in * c_out}


def factorized_reduce_costs(c_in: int, c_out: int, h: int) -> dict[str, float]:
    ho = h // 2
    return {"params": c_in * c_out + 2 * c_out, "macs": c_in * c_out * ho * ho,
            "mac": 2 * c_in * h * h + c_out * ho * ho + c_in * c_out}


def edge_stride_hw(plan_row: dict[str, Any], source: int) -> tuple[int, int]:
    """(stride, input H) of an edge from state `source` in a cell of `cell_plan`: a reduction
    cell's input edges halve H; its intermediate nodes are already at the halved size."""
    if plan_row["kind"] != "reduce":
        return 1, plan_row["h"]
    return (2, plan_row["h"]) if source < 2 else (1, plan_row["h"] // 2)


# --- the evaluation network (DARTS's model.py, by its description) -----------------------------------


class Cell(nn.Module):
    def __init__(self, graph: CellGraph, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.graph, self.reduction = graph, reduction
        used0, used1 = graph.used_inputs()
        # Preprocess only the inputs some edge uses (a child graph may drop one entirely).
        self.pre0 = (FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)) if used0 else None
        self.pre1 = ReLUConvBN(c_p, c) if used1 else None
        self.ops = nn.ModuleDict()
        for j in range(STEPS):
            for i, op in graph.inputs(j):
                self.ops[f"{i}_{j + 2}"] = make_op(op, c, 2 if reduction and i < 2 else 1)

    def forward(self, s0, s1):
        states: dict[int, torch.Tensor] = {}
        if self.pre0 is not None:
            states[0] = self.pre0(s0)
        if self.pre1 is not None:
            states[1] = self.pre1(s1)
        for j in range(STEPS):
            ins = self.graph.inputs(j)
            if ins:
                total = None
                for i, _ in ins:
                    y = self.ops[f"{i}_{j + 2}"](states[i])
                    total = y if total is None else total + y
                states[j + 2] = total
        return torch.cat([states[k] for k in self.graph.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head after the 2/3 cell; at 8x8 its final pool is a no-op."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """Stem, cells, global pool + linear; with `auxiliary`, training mode returns (logits, aux logits)."""

    def __init__(self, space: "DartsSpace", arch: DartsArch, auxiliary: bool = False):
        super().__init__()
        c = space.channels
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        c_pp, c_p, c_cur = 3 * c, 3 * c, c
        self.cells = nn.ModuleList()
        self.aux_after = None
        reduction_prev = False
        for k in range(space.cells):
            reduction = k in space.reductions
            c_cur = c_cur * 2 if reduction else c_cur
            graph = arch.reduce if reduction else arch.normal
            self.cells.append(Cell(graph, c_pp, c_p, c_cur, reduction, reduction_prev))
            c_pp, c_p = c_p, len(graph.concat) * c_cur
            reduction_prev = reduction
            if auxiliary and k == space.reductions[-1]:
                self.aux_after, c_aux = k, c_p
        self.auxiliary = AuxiliaryHead(c_aux, space.num_classes) if self.aux_after is not None else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, space.num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if k == self.aux_after and self.training:
                aux = self.auxiliary(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


# --- the space ---------------------------------------------------------------------------------------


@register_space("darts")
class DartsSpace(SearchSpace):
    name = "darts"
    references = REFERENCES
    small_options = {"channels": 4, "cells": 3, "resolution": 16, "num_classes": 10}

    def __init__(self, channels: int = 16, cells: int = 8, num_classes: int = 10, resolution: int = 32,
                 reductions: list[int] | tuple[int, ...] | None = None):
        def check_int(what, v, lo, hi):
            if not _is_int(v) or not lo <= v <= hi:
                raise HwnasError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")

        check_int("channels", channels, 2, 1024)
        if channels % 2:  # FactorizedReduce splits C into two halves
            raise HwnasError(f"channels must be even (FactorizedReduce halves them), got {channels}")
        check_int("cells", cells, 1, 100)
        check_int("classes", num_classes, 2, 100_000)
        check_int("resolution", resolution, 8, 1024)
        if reductions is None:
            reductions = (cells // 3, 2 * cells // 3)
        reductions = tuple(reductions)
        if not all(_is_int(r) for r in reductions):
            raise HwnasError(f"reduction positions must be integers, got {list(reductions)}")
        if (len(set(reductions)) != len(reductions) or any(not 0 <= r < cells for r in reductions)
                or list(reductions) != sorted(reductions)):
            raise HwnasError(f"reduction cells at {list(reductions)} are impossible with {cells} cells: they must be "
                             f"distinct, increasing positions in 0..{cells - 1} (default: cells//3 and 2*cells//3; "
                             f"2 cells at least)")
        if resolution % (2 ** len(reductions)):
            raise HwnasError(f"resolution {resolution} must be divisible by {2 ** len(reductions)} "
                             f"({len(reductions)} reduction cells halve it)")
        self.channels, self.cells, self.num_classes, self.resolution = channels, cells, num_classes, resolution
        self.reductions = reductions

    @property
    def config(self) -> dict[str, Any]:
        return {"space": "darts", "channels": self.channels, "cells": self.cells, "num_classes": self.num_classes,
                "resolution": self.resolution, "reductions": list(self.reductions)}

    def validate(self, doc: Any) -> DartsArch:
        if isinstance(doc, str) and doc in REFERENCES:
            doc = REFERENCES[doc]
        return parse_arch(doc)

    def default_arch(self) -> DartsArch:
        return parse_arch(REFERENCES["darts-v2"])

    def sample(self, rng: np.random.Generator) -> DartsArch:
        """A random child graph: each edge's op uniform over the 8 primitives (none included,
        as in SNAS's child graphs); a cell left without an active node is drawn again."""
        cells = {}
        for kind in CELL_TYPES:
            while kind not in cells:
                edges = [PRIMITIVES[int(k)] for k in rng.integers(0, len(PRIMITIVES), N_EDGES)]
                try:
                    cells[kind] = _cell(kind, edges, None)
                except HwnasError:  # no active node
                    pass
        return DartsArch(cells["normal"], cells["reduce"])

    def build(self, arch, auxiliary: bool = False) -> nn.Module:
        if auxiliary and self.resolution // 2 ** len(self.reductions) < 5:
            raise HwnasError(f"the auxiliary head needs 5x5 or more after the last reduction; "
                             f"resolution {self.resolution} gives {self.resolution // 2 ** len(self.reductions)}")
        return DartsNetwork(self, self.validate(arch), auxiliary).eval()

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, 3, self.resolution, self.resolution)

    # --- sizes of each cell and its parts -------------------------------------------------------

    def cell_plan(self, arch=None) -> list[dict[str, Any]]:
        """Per cell: kind, C, input H, and the channels of its two inputs (they depend on how
        many nodes the previous cells concatenate)."""
        arch = self.validate(arch) if arch is not None else None
        c, h = self.channels, self.resolution
        c_pp = c_p = 3 * c
        reduction_prev, plan = False, []
        for k in range(self.cells):
            reduction = k in self.reductions
            c_cur = c * 2 ** sum(r <= k for r in self.reductions)
            kind = "reduce" if reduction else "normal"
            plan.append({"cell": k, "kind": kind, "c": c_cur, "h": h, "c_pp": c_pp, "c_p": c_p,
                         "reduction_prev": reduction_prev})
            n_out = len(arch.cell(kind).concat) if arch is not None else STEPS
            c_pp, c_p = c_p, n_out * c_cur
            h = h // 2 if reduction else h
            reduction_prev = reduction
        return plan

    def costs(self, arch) -> dict[str, float]:
        """params, MACs and memory access cost of the evaluation network (no auxiliary head)."""
        arch = self.validate(arch)
        c, h = self.channels, self.resolution
        total = {"params": 27 * 3 * c + 6 * c, "macs": 27 * 3 * c * h * h,
                 "mac": 3 * h * h + 3 * c * h * h + 27 * 3 * c}
        plan = self.cell_plan(arch)
        for p in plan:
            graph = arch.cell(p["kind"])
            used0, used1 = graph.used_inputs()
            parts = []
            if used0:
                parts.append(factorized_reduce_costs(p["c_pp"], p["c"], p["h"] * 2) if p["reduction_prev"]
                             else relu_conv_bn_costs(p["c_pp"], p["c"], p["h"]))
            if used1:
                parts.append(relu_conv_bn_costs(p["c_p"], p["c"], p["h"]))
            for j in range(STEPS):
                for i, op in graph.inputs(j):
                    parts.append(op_costs(op, p["c"], *edge_stride_hw(p, i)))
            for part in parts:
                for key in total:
                    total[key] += part[key]
        last = plan[-1]
        c_last = len(arch.cell(last["kind"]).concat) * last["c"]
        total["params"] += c_last * self.num_classes + self.num_classes
        total["macs"] += c_last * self.num_classes
        total["mac"] += c_last * self.num_classes + c_last + self.num_classes
        return total

    def params(self, arch) -> int:
        return int(self.costs(arch)["params"])

    def macs(self, arch) -> int:
        return int(self.costs(arch)["macs"])
