"""Search spaces, architectures as plain JSON, and the per-layer specs that key lookup tables.

No torch here: a space, an architecture and its layer specs are plain data, so lookup
tables, surrogates and measurement workers can use them without a deep-learning stack.
`hwnas.spaces.mbconv_ops.build` turns an architecture into a `torch.nn.Module`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.jsonutil import content_hash
from hwnas.spaces import SPACES, register_space
from hwnas.spaces.base import SearchSpace

ACTIVATIONS = ("relu", "relu6", "swish")
SKIP = "skip"


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a conv padded with kernel // 2 (the only padding used here)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class OpDef:
    """A candidate operation: an MBInvRes block whose mid width is e * C_in, e in [e_min, e_max]."""

    name: str
    kernel: int
    expansion: float  # the default e
    e_min: float
    e_max: float
    se_ratio: int  # SE channels = se_ratio * C_in; 0 means no SE


@dataclass(frozen=True)
class StageDef:
    c_out: int
    stride: int
    min_depth: int
    max_depth: int
    act: str


@dataclass(frozen=True)
class SpaceDef:
    """The fixed shape of a space family, before resolution, width multiplier and classes."""

    name: str
    stem_channels: int
    stem_act: str
    fixed_out: int  # stage 2: a fixed k3, e1 MBInvRes block
    fixed_se: int
    fixed_act: str
    stages: tuple[StageDef, ...]
    ops: tuple[OpDef, ...]
    head_channels: int
    head_act: str
    elastic: bool  # widths vary continuously within each op's range
    skip_op: bool  # a non-first layer of a stage may be "skip"
    description: str


def _tfnas_ops() -> tuple[OpDef, ...]:
    ops = []
    for e, (lo, hi), se in ((6, (4, 8), 2), (3, (2, 4), 1)):
        for k in (3, 5):
            ops.append(OpDef(f"k{k}_e{e}", k, e, lo, hi, 0))
            ops.append(OpDef(f"k{k}_e{e}_se", k, e, lo, hi, se))
    return tuple(sorted(ops, key=lambda o: o.name))


def _proxyless_ops() -> tuple[OpDef, ...]:
    return tuple(OpDef(f"k{k}_e{e}", k, e, e, e, 0) for k in (3, 5, 7) for e in (3, 6))


SPACE_DEFS: dict[str, SpaceDef] = {
    # TF-NAS (ECCV 2020) Table 1: EfficientNet-B0 shapes, ReLU in stages 1-3, Swish after.
    "tfnas": SpaceDef(
        name="tfnas",
        stem_channels=32,
        stem_act="relu",
        fixed_out=16,
        fixed_se=8,
        fixed_act="relu",
        stages=(
            StageDef(24, 2, 1, 2, "relu"),
            StageDef(40, 2, 1, 3, "swish"),
            StageDef(80, 2, 1, 4, "swish"),
            StageDef(112, 1, 1, 4, "swish"),
            StageDef(192, 2, 1, 4, "swish"),
            StageDef(320, 1, 1, 1, "swish"),
        ),
        ops=_tfnas_ops(),
        head_channels=1280,
        head_act="swish",
        elastic=True,
        skip_op=False,
        description="TF-NAS supernet: 6 searchable stages, 8 MBInvRes ops, elastic widths",
    ),
    # ProxylessNAS (GPU) / UNAS: 21 MBConv layers, k in {3,5,7} x e in {3,6}, skip where shapes match.
    "proxyless": SpaceDef(
        name="proxyless",
        stem_channels=32,
        stem_act="relu6",
        fixed_out=16,
        fixed_se=0,
        fixed_act="relu6",
        stages=(
            StageDef(24, 2, 4, 4, "relu6"),
            StageDef(40, 2, 4, 4, "relu6"),
            StageDef(80, 2, 4, 4, "relu6"),
            StageDef(96, 1, 4, 4, "relu6"),
            StageDef(192, 2, 4, 4, "relu6"),
            StageDef(320, 1, 1, 1, "relu6"),
        ),
        ops=_proxyless_ops(),
        head_channels=1280,
        head_act="relu6",
        elastic=False,
        skip_op=True,
        description="ProxylessNAS/MobileNetV2 space searched by UNAS: 21 layers, 6 MBConv ops + skip",
    ),
}


def closest(name: str, choices) -> str:
    """' (did you mean X?)' for an unknown name, or ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class LayerSpec:
    """One layer at its input shape: what a lookup table is keyed by.

    kind "stem" is the first conv, "mbinvres" an inverted-residual block (mid = expanded
    width, se = squeeze-excite width, 0 for none), "head" the 1x1 conv to c_out, the
    average pool and the classifier. `part` and `position` say where the layer sits in a
    network; they are not part of the key, so equal layers in different places share one
    measurement.
    """

    kind: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    act: str
    h: int
    w: int
    batch: int = 1
    mid: int = 0
    se: int = 0
    num_classes: int = 0
    part: str = field(default="", compare=False)  # stem | fixed | searchable | head
    position: str = field(default="", compare=False)  # e.g. "stage3.layer1"

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        del d["part"], d["position"]
        return d

    @property
    def key_hash(self) -> str:
        return content_hash({"layer": self.key()})

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.c_in, self.h, self.w)

    @property
    def out_hw(self) -> tuple[int, int]:
        return conv_out(self.h, self.kernel, self.stride), conv_out(self.w, self.kernel, self.stride)

    @property
    def residual(self) -> bool:
        return self.kind == "mbinvres" and self.stride == 1 and self.c_in == self.c_out

    @property
    def has_expand(self) -> bool:
        # An e1 block (mid == C_in) has no expansion conv, as in MobileNetV2.
        return self.kind == "mbinvres" and self.mid != self.c_in

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (convs and FCs; BN, activations and pools not counted)."""
        ho, wo = self.out_hw
        if self.kind == "stem":
            return ho * wo * self.c_in * self.kernel**2 * self.c_out
        if self.kind == "head":
            return self.h * self.w * self.c_in * self.c_out + self.c_out * self.num_classes
        expand = self.h * self.w * self.c_in * self.mid if self.has_expand else 0
        depthwise = ho * wo * self.mid * self.kernel**2
        se = 2 * self.mid * self.se
        project = ho * wo * self.mid * self.c_out
        return expand + depthwise + se + project

    @property
    def params(self) -> int:
        """Trainable parameters, as torch counts them (BN weight and bias included)."""
        if self.kind == "stem":
            return self.c_in * self.kernel**2 * self.c_out + 2 * self.c_out
        if self.kind == "head":
            return self.c_in * self.c_out + 2 * self.c_out + self.c_out * self.num_classes + self.num_classes
        expand = self.c_in * self.mid + 2 * self.mid if self.has_expand else 0
        depthwise = self.mid * self.kernel**2 + 2 * self.mid
        se = (2 * self.mid * self.se + self.se + self.mid) if self.se else 0
        project = self.mid * self.c_out + 2 * self.c_out
        return expand + depthwise + se + project

    @property
    def memory(self) -> int:
        """Elements read and written by the layer's main tensors (activations and weights), per image."""
        ho, wo = self.out_hw
        if self.kind == "mbinvres":
            acts = self.h * self.w * (self.c_in + self.mid) + ho * wo * (2 * self.mid + self.c_out)
        else:
            acts = self.h * self.w * self.c_in + ho * wo * self.c_out
        return acts + self.params


@dataclass(frozen=True)
class LayerChoice:
    op: str
    mid: int
    se: int


@dataclass(frozen=True)
class Arch:
    """A validated, canonical architecture of one space. Its JSON form is the user's format."""

    space: str
    width_mult: float
    stages: tuple[tuple[LayerChoice, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "width_mult": self.width_mult,
            "stages": [
                {"depth": len(stage), "layers": [asdict(layer) for layer in stage]} for stage in self.stages
            ],
        }

    @property
    def hash(self) -> str:
        return content_hash(self.to_json())

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)


@dataclass(frozen=True)
class StageShape:
    """A searchable stage after width scaling: channels in/out, stride, depth range, activation."""

    c_in: int
    c_out: int
    stride: int
    min_depth: int
    max_depth: int
    act: str


class Space(SearchSpace):
    """An MBConv search space (tfnas, proxyless) at a given input resolution, width multiplier
    and number of classes."""

    small_options = {"resolution": 32, "width_mult": 0.25, "num_classes": 10}

    def __init__(self, name: str, resolution: int = 224, width_mult: float = 1.0, num_classes: int = 1000):
        if not is_mbconv(name):
            raise HwnasError(f"unknown space {name!r}{closest(name, SPACE_DEFS)}; known: {', '.join(SPACE_DEFS)}")
        _check_int("resolution", resolution, 16, 2048)
        _check_int("number of classes", num_classes, 2, 100_000)
        if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool) or not 0.1 <= width_mult <= 4:
            raise HwnasError(f"width multiplier must be a number in [0.1, 4], got {width_mult!r}")
        self.definition = d = SPACE_DEFS[name]
        self.name = name
        self.resolution = resolution
        self.width_mult = float(width_mult)
        self.num_classes = num_classes
        self.ops = {op.name: op for op in d.ops}
        self.stem_channels = self._scale(d.stem_channels)
        self.fixed_out = self._scale(d.fixed_out)
        self.fixed_se = max(1, round(d.fixed_se * self.width_mult)) if d.fixed_se else 0
        self.head_channels = self._scale(d.head_channels)
        stages, c_in = [], self.fixed_out
        for s in d.stages:
            c_out = self._scale(s.c_out)
            stages.append(StageShape(c_in, c_out, s.stride, s.min_depth, s.max_depth, s.act))
            c_in = c_out
        self.stages: tuple[StageShape, ...] = tuple(stages)

    def __repr__(self) -> str:
        return (
            f"Space({self.name!r}, resolution={self.resolution}, width_mult={self.width_mult}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def config(self) -> dict[str, Any]:
        return {
            "space": self.name,
            "resolution": self.resolution,
            "width_mult": self.width_mult,
            "num_classes": self.num_classes,
        }

    def _scale(self, channels: int) -> int:
        return channels if self.width_mult == 1.0 else make_divisible(channels * self.width_mult)

    # --- what each layer may be -------------------------------------------------------

    def layer_c_in(self, stage: int, layer: int) -> int:
        return self.stages[stage].c_in if layer == 0 else self.stages[stage].c_out

    def op_names(self, stage: int, layer: int) -> list[str]:
        """Valid ops of a layer; "skip" only where input and output shapes match."""
        names = sorted(self.ops)
        if self.definition.skip_op and layer > 0:
            names.append(SKIP)
        return names

    def width_range(self, op: str, c_in: int) -> tuple[int, int]:
        """Allowed mid channels of `op` at input width `c_in` (lo == hi in a fixed-width space)."""
        o = self.ops[op]
        return math.ceil(o.e_min * c_in - 1e-9), math.floor(o.e_max * c_in + 1e-9)

    def aligned_width(self, op: str, c_in: int, mid: float, align: int = 1) -> int:
        """`mid` rounded to a multiple of `align` and clipped to the op's width range: the widths
        a backend runs at full speed (ORT CPU kernels are ~3x slower per layer off a multiple of 4)."""
        lo, hi = self.width_range(op, c_in)
        return min(hi, max(lo, align * math.floor(mid / align + 0.5)))

    def default_choice(self, op: str, c_in: int) -> LayerChoice:
        if op == SKIP:
            return LayerChoice(SKIP, 0, 0)
        o = self.ops[op]
        return LayerChoice(op, int(round(o.expansion * c_in)), o.se_ratio * c_in)

    @property
    def max_layers(self) -> int:
        return sum(s.max_depth for s in self.stages)

    # --- architectures ------------------------------------------------------------------

    def validate(self, doc: Any) -> Arch:
        """Check a JSON architecture against this space; the error names the bad field."""
        if isinstance(doc, Arch):
            doc = doc.to_json()
        if not isinstance(doc, dict):
            raise HwnasError(f"architecture must be a JSON object, got {type(doc).__name__}")
        unknown = set(doc) - {"space", "width_mult", "stages", "name"}
        if unknown:
            raise HwnasError(f"architecture has unknown field {sorted(unknown)[0]!r}")
        if doc.get("space", self.name) != self.name:
            raise HwnasError(f"architecture.space is {doc['space']!r}, but the space is {self.name!r}")
        wm = doc.get("width_mult", 1.0)
        if isinstance(wm, bool) or not isinstance(wm, (int, float)) or float(wm) != self.width_mult:
            raise HwnasError(f"architecture.width_mult is {wm!r}, but the space's width multiplier is {self.width_mult}")
        stages = doc.get("stages")
        if not isinstance(stages, list):
            raise HwnasError("architecture.stages must be a list")
        if len(stages) != len(self.stages):
            raise HwnasError(f"architecture.stages has {len(stages)} stages; space {self.name} has {len(self.stages)}")
        return Arch(self.name, self.width_mult, tuple(self._validate_stage(i, s) for i, s in enumerate(stages)))

    def _validate_stage(self, i: int, stage: Any) -> tuple[LayerChoice, ...]:
        where = f"stages[{i}]"
        shape = self.stages[i]
        if not isinstance(stage, dict):
            raise HwnasError(f"{where} must be an object with 'depth' and 'layers'")
        unknown = set(stage) - {"depth", "layers"}
        if unknown:
            raise HwnasError(f"{where} has unknown field {sorted(unknown)[0]!r}")
        layers = stage.get("layers")
        if not isinstance(layers, list):
            raise HwnasError(f"{where}.layers must be a list")
        depth = stage.get("depth", len(layers))
        _check_int(f"{where}.depth", depth, shape.min_depth, shape.max_depth)
        if len(layers) != depth:
            raise HwnasError(f"{where}.layers has {len(layers)} layers but depth is {depth}")
        return tuple(self._validate_layer(i, j, layer) for j, layer in enumerate(layers))

    def _validate_layer(self, i: int, j: int, layer: Any) -> LayerChoice:
        where = f"stages[{i}].layers[{j}]"
        if isinstance(layer, str):
            layer = {"op": layer}
        if not isinstance(layer, dict):
            raise HwnasError(f"{where} must be an object with 'op' (and optionally 'mid', 'se')")
        unknown = set(layer) - {"op", "mid", "se"}
        if unknown:
            raise HwnasError(f"{where} has unknown field {sorted(unknown)[0]!r}")
        op = layer.get("op")
        valid = self.op_names(i, j)
        if not isinstance(op, str) or op not in valid:
            hint = closest(op, valid) if isinstance(op, str) else ""
            raise HwnasError(f"{where}.op {op!r} is not an op of this layer{hint}; valid: {', '.join(valid)}")
        c_in = self.layer_c_in(i, j)
        default = self.default_choice(op, c_in)
        mid = layer.get("mid", default.mid)
        se = layer.get("se", default.se)
        if op == SKIP:
            _check_int(f"{where}.mid", mid, 0, 0)
            _check_int(f"{where}.se", se, 0, 0)
            return default
        lo, hi = self.width_range(op, c_in)
        _check_int(f"{where}.mid", mid, lo, hi, f" for op {op} at C_in={c_in}")
        _check_int(f"{where}.se", se, default.se, default.se, f" for op {op} at C_in={c_in}")
        return LayerChoice(op, mid, se)

    def default_arch(self) -> Arch:
        """Every stage at full depth, every layer the first op at its default width."""
        stages = []
        for i, s in enumerate(self.stages):
            stages.append(tuple(self.default_choice(self.op_names(i, j)[0], self.layer_c_in(i, j)) for j in range(s.max_depth)))
        return Arch(self.name, self.width_mult, tuple(stages))

    def random_arch(self, rng: np.random.Generator, align: int = 1) -> Arch:
        """Uniform over depths, ops and (in an elastic space) integer widths, rounded to a
        multiple of `align` (as `aligned_width`; 1 leaves them as drawn)."""
        stages = []
        for i, s in enumerate(self.stages):
            depth = int(rng.integers(s.min_depth, s.max_depth + 1))
            layers = []
            for j in range(depth):
                names = self.op_names(i, j)
                op = names[int(rng.integers(len(names)))]
                choice = self.default_choice(op, self.layer_c_in(i, j))
                if op != SKIP and self.definition.elastic:
                    lo, hi = self.width_range(op, self.layer_c_in(i, j))
                    mid = self.aligned_width(op, self.layer_c_in(i, j), int(rng.integers(lo, hi + 1)), align)
                    choice = LayerChoice(op, mid, choice.se)
                layers.append(choice)
            stages.append(tuple(layers))
        return Arch(self.name, self.width_mult, tuple(stages))

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.random_arch(rng)

    def build(self, arch: Arch | dict):
        from hwnas.spaces.mbconv_ops import build  # torch: this module stays importable without it

        return build(self, self.validate(arch)).eval()

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, 3, self.resolution, self.resolution)

    def random_archs(self, n: int, seed: int = 0, align: int = 1) -> list[Arch]:
        _check_int("width alignment", align, 1, 64)
        rng = np.random.default_rng(seed)
        return [self.random_arch(rng, align) for _ in range(n)]

    # --- layer specs ---------------------------------------------------------------------

    def stem(self, batch: int = 1) -> LayerSpec:
        r = self.resolution
        return LayerSpec("stem", 3, self.stem_channels, 3, 2, self.definition.stem_act, r, r, batch, part="stem", position="stem")

    def fixed_block(self, batch: int = 1) -> LayerSpec:
        h = conv_out(self.resolution, 3, 2)
        c = self.stem_channels
        return LayerSpec(
            "mbinvres", c, self.fixed_out, 3, 1, self.definition.fixed_act, h, h, batch,
            mid=c, se=self.fixed_se, part="fixed", position="stage2",
        )

    def head(self, h: int, batch: int = 1) -> LayerSpec:
        return LayerSpec(
            "head", self.stages[-1].c_out, self.head_channels, 1, 1, self.definition.head_act, h, h, batch,
            num_classes=self.num_classes, part="head", position="head",
        )

    def layers(self, arch: Arch | dict, batch: int = 1) -> list[LayerSpec]:
        """The network in order: stem, fixed block, the searchable layers (skips left out), head."""
        arch = self.validate(arch)
        _check_int("batch", batch, 1, 4096)
        specs = [self.stem(batch), self.fixed_block(batch)]
        h = specs[-1].out_hw[0]
        for i, (stage, shape) in enumerate(zip(arch.stages, self.stages)):
            for j, choice in enumerate(stage):
                if choice.op == SKIP:
                    continue
                stride = shape.stride if j == 0 else 1
                spec = LayerSpec(
                    "mbinvres", self.layer_c_in(i, j), shape.c_out, self.ops[choice.op].kernel, stride, shape.act,
                    h, h, batch, mid=choice.mid, se=choice.se, part="searchable", position=f"stage{i + 3}.layer{j + 1}",
                )
                specs.append(spec)
                h = spec.out_hw[0]
        specs.append(self.head(h, batch))
        return specs

    def macs(self, arch: Arch | dict) -> int:
        return sum(s.macs for s in self.layers(arch))

    def params(self, arch: Arch | dict) -> int:
        return sum(s.params for s in self.layers(arch))


def _check_int(what: str, value: Any, lo: int, hi: int, context: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HwnasError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        rng = f"{lo}" if lo == hi else f"[{lo}, {hi}]"
        raise HwnasError(f"{what} = {value} is out of range {rng}{context}")


def width_grid(lo: int, hi: int, step: int | None) -> list[int]:
    """Mid widths measured for a lookup table: both ends and every multiple of `step` between."""
    if step is None or lo == hi:
        return sorted({lo, hi})
    return sorted({lo, hi, *range((lo // step + 1) * step, hi, step)})


def distinct_layers(space: Space, batch: int = 1, width_step: int | None = None) -> list[LayerSpec]:
    """Every distinct layer spec the space can contain: the fixed parts, then every op at
    every layer position and input shape; mid widths at the default (width_step None) or
    on a grid of `width_step` channels over each op's range (elastic spaces)."""
    specs: dict[LayerSpec, None] = {space.stem(batch): None, space.fixed_block(batch): None}
    h = space.fixed_block(batch).out_hw[0]
    for i, shape in enumerate(space.stages):
        h_next = conv_out(h, 3, shape.stride)
        for j in range(min(shape.max_depth, 2)):  # layers 2.. of a stage all share one input shape
            c_in = space.layer_c_in(i, j)
            for op in space.op_names(i, j):
                if op == SKIP:
                    continue
                default = space.default_choice(op, c_in)
                mids = [default.mid] if width_step is None else width_grid(*space.width_range(op, c_in), width_step)
                for mid in mids:
                    spec = LayerSpec(
                        "mbinvres", c_in, shape.c_out, space.ops[op].kernel, shape.stride if j == 0 else 1, shape.act,
                        h if j == 0 else h_next, h if j == 0 else h_next, batch, mid=mid, se=default.se,
                        part="searchable", position=f"stage{i + 3}.layer{j + 1}",
                    )
                    specs.setdefault(spec)
        h = h_next
    specs.setdefault(space.head(h, batch))
    return list(specs)


def register_mbconv(definition: SpaceDef) -> SpaceDef:
    """A new MBConv space is one file: its `SpaceDef`, passed here at import, and a line naming
    that file in `hwnas.spaces.SPACES`. Every MBConv code path (layer specs, supernets, lookup
    tables, surrogates, elasticity-scaling) then takes it as it takes tfnas."""
    SPACE_DEFS[definition.name] = definition
    register_space(definition.name)(partial(Space, definition.name))
    return definition


def is_mbconv(name: str) -> bool:
    """Is `name` an MBConv space (importing the module that registers it, where one does)?"""
    if name not in SPACE_DEFS and name in SPACES.modules:
        SPACES.get(name)
    return name in SPACE_DEFS


for _definition in list(SPACE_DEFS.values()):
    register_mbconv(_definition)
