"""A search space made from any PyTorch model (ModularNAS's slots, seed 001).

A *slot* is a place in a network where one of several candidate modules goes. A model gets
slots two ways:

  - a traversal converts the modules that a *rule* matches (torchvision's InvertedResidual is an
    `mbconv` slot, a k x k Conv2d a `conv` slot, ResNet's BasicBlock/Bottleneck a `block` slot);
    the rules are a small registry (`register_rule`), so a user adds one;
  - a user puts a `Slot(c_in, c_out, stride, kind)` placeholder in their own model.

Each slot's shapes (input C x H x W, output C x H x W) come from one traced forward pass at the
space's resolution. Its candidates are named from a registry (`register_candidate`: MB3E6,
NC5, RB3, skip, ...) and every candidate is checked to give the slot's output shape; a converted
slot also keeps its `original` module, so the default architecture rebuilds the user's network
exactly (same weights, same outputs). An architecture is one candidate name per slot:

    {"space": "slots", "choices": {"features.1": "original", "features.2": "MB5E3", ...}}

`--model torchvision:NAME` builds a torchvision classification model (no weights);
`--model package.module:factory` calls the user's factory.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError, first_line
from hwnas.jsonutil import content_hash
from hwnas.spaces import register_space
from hwnas.spaces.base import SearchSpace
from hwnas.validate import check_number

ORIGINAL = "original"  # a converted slot's own module


# --- torchvision on a CPU torch ------------------------------------------------------------------

_TV_LIB = None  # keeps the op schemas below alive


def import_torchvision():
    """torchvision, whose pure-Python models are all hwnas uses. The only torchvision 0.28.0 wheel
    on the package index is the CUDA build: its compiled ops need CUDA torch and fail to load on
    the CPU build, and its import then stops at registering fake kernels for two of those ops.
    Defining the two schemas first lets the import (and every model) work; detection ops stay
    unavailable, which hwnas never calls."""
    global _TV_LIB
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _TV_LIB = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _TV_LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    return torchvision


# --- the placeholder ---------------------------------------------------------------------------


class Slot(nn.Module):
    """A placeholder a user puts in their own model: `kind` picks its candidates (or give them).
    Its forward only gives the output shape (zeros), so the model can be traced for shapes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kind: str = "mbconv",
                 candidates: list[str] | None = None):
        super().__init__()
        self.c_in, self.c_out, self.stride, self.kind = c_in, c_out, stride, kind
        self.candidates = list(candidates) if candidates is not None else None

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.c_in:
            raise HwnasError(f"Slot(c_in={self.c_in}) got an input of shape {list(x.shape)}")
        n, _, h, w = x.shape
        return x.new_zeros(n, self.c_out, -(-h // self.stride), -(-w // self.stride))

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, stride={self.stride}, kind={self.kind!r}"


# --- conversion rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    kind: str
    matches: Callable[[nn.Module], bool]


RULES: dict[str, Rule] = {}


def register_rule(kind: str, matches: Callable[[nn.Module], bool]) -> None:
    """Modules for which `matches(module)` is true become slots of `kind` (first rule wins, and
    the traversal does not look inside a converted module)."""
    RULES[kind] = Rule(kind, matches)


def _is_inverted_residual(m: nn.Module) -> bool:
    return type(m).__name__ == "InvertedResidual" and type(m).__module__.startswith("torchvision.")


def _is_resnet_block(m: nn.Module) -> bool:
    return type(m).__name__ in ("BasicBlock", "Bottleneck") and type(m).__module__.startswith("torchvision.")


def _is_kxk_conv(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.kernel_size[0] == m.kernel_size[1] > 1
            and m.dilation == (1, 1) and isinstance(m.padding, tuple))


register_rule("mbconv", _is_inverted_residual)
register_rule("block", _is_resnet_block)
register_rule("conv", _is_kxk_conv)


# --- candidates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    kinds: tuple[str, ...]
    make: Callable[[int, int, int], nn.Module]  # (c_in, c_out, stride) -> module
    only_where_fits: bool = False  # skip: offered only where the shapes allow, never an error


CANDIDATES: dict[str, Candidate] = {}


def register_candidate(name: str, kinds: tuple[str, ...] | list[str], make: Callable[[int, int, int], nn.Module],
                       only_where_fits: bool = False) -> None:
    if name == ORIGINAL:
        raise HwnasError(f"{ORIGINAL!r} names a slot's own module; pick another candidate name")
    CANDIDATES[name] = Candidate(name, tuple(kinds), make, only_where_fits)


def candidates_of(kind: str) -> list[str]:
    return [c.name for c in CANDIDATES.values() if kind in c.kinds]


class MBConv(nn.Module):
    """MobileNetV2's inverted residual at any kernel and expansion (ReLU6, residual where shapes match)."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expand: int):
        super().__init__()
        mid = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
                   nn.ReLU6(inplace=True), nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class ResBlock(nn.Module):
    """ResNet's basic block (two k x k convs) or bottleneck (1x1, k x k, 1x1 at c_out/4), with a
    1x1 projection shortcut where the shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, bottleneck: bool):
        super().__init__()
        p = kernel // 2
        if bottleneck:
            mid = max(c_out // 4, 1)
            self.body = nn.Sequential(
                nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, kernel, stride, p, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel, stride, p, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, kernel, 1, p, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


for _k in (3, 5, 7):
    for _e in (3, 6):
        register_candidate(f"MB{_k}E{_e}", ("mbconv",), lambda ci, co, s, k=_k, e=_e: MBConv(ci, co, s, k, e))
    register_candidate(f"NC{_k}", ("conv",), lambda ci, co, s, k=_k: nn.Conv2d(ci, co, k, s, k // 2, bias=False))
for _k in (3, 5):
    register_candidate(f"RB{_k}", ("block",), lambda ci, co, s, k=_k: ResBlock(ci, co, s, k, False))
    register_candidate(f"BT{_k}", ("block",), lambda ci, co, s, k=_k: ResBlock(ci, co, s, k, True))
register_candidate("skip", ("mbconv", "block"), lambda ci, co, s: nn.Identity(), only_where_fits=True)


# --- the user's model --------------------------------------------------------------------------

MODEL_FORMS = "'torchvision:NAME' or 'package.module:factory'"


def load_model(spec: Any, num_classes: int | None = None, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The network a model spec names, built with `kwargs` (and num_classes where the factory takes it)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise HwnasError(f"--model must be {MODEL_FORMS}, got {spec!r}")
    module_name, name = spec.split(":")
    kwargs = dict(kwargs or {})
    if module_name == "torchvision":
        tv = import_torchvision()
        known = tv.models.list_models(module=tv.models)
        if name not in known:
            match = difflib.get_close_matches(name, known, n=1)
            raise HwnasError(f"--model {spec}: torchvision has no classification model {name!r}"
                             + (f" (did you mean {match[0]!r}?)" if match else ""))

        def factory(**kw):
            return tv.models.get_model(name, weights=None, **kw)
        takes_classes = True
    else:
        if os.getcwd() not in sys.path:  # the user's own module, run from its folder (as uvicorn and pytest do)
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # any import failure of the user's code is bad input here
            raise HwnasError(f"--model {spec}: cannot import {module_name}: {first_line(e)}") from None
        factory = getattr(module, name, None)
        if not callable(factory):
            raise HwnasError(f"--model {spec}: {module_name} has no callable {name!r}")
        try:
            params = inspect.signature(factory).parameters
            takes_classes = "num_classes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            takes_classes = False
    if num_classes is not None and takes_classes:
        kwargs.setdefault("num_classes", num_classes)
    try:
        net = factory(**kwargs)
    except Exception as e:
        raise HwnasError(f"--model {spec}: the factory failed: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(net, nn.Module):
        raise HwnasError(f"--model {spec}: the factory returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def _find(net: nn.Module, kinds: tuple[str, ...]) -> list[tuple[str, str, nn.Module]]:
    """(path, kind, module) of every module a rule converts (or a user Slot), in forward-registration order."""
    found: list[tuple[str, str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, Slot):
                found.append((path, child.kind, child))
                continue
            kind = next((r.kind for r in RULES.values() if r.kind in kinds and r.matches(child)), None)
            if kind is not None:
                found.append((path, kind, child))
            else:
                walk(child, path)

    walk(net, "")
    return found


def _set_module(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, module)


@dataclass(frozen=True)
class SlotInfo:
    name: str  # the module's path in the network
    kind: str
    c_in: int
    c_out: int
    stride: int
    in_shape: tuple[int, int, int]  # C, H, W
    out_shape: tuple[int, int, int]
    candidates: tuple[str, ...]
    default: str
    original: str = ""  # structure hash of the original module ("" for a user Slot)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "c_in": self.c_in, "c_out": self.c_out, "stride": self.stride,
                "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "candidates": list(self.candidates), "default": self.default}

    def spec(self, choice: str) -> dict[str, Any]:
        """What a lookup table keys this slot's candidate by (the original module by its structure)."""
        return {"kind": self.kind, "candidate": choice, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), **({"structure": self.original} if choice == ORIGINAL else {})}


@dataclass(frozen=True)
class SlotArch:
    slots: tuple[str, ...]
    choices: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"space": "slots", "choices": dict(zip(self.slots, self.choices))}

    @property
    def hash(self) -> str:
        return content_hash(self.to_json())


# --- the space ---------------------------------------------------------------------------------


@register_space("slots")
class SlotSpace(SearchSpace):
    """The slots of a model and their candidates; architectures choose one candidate per slot."""

    name = "slots"
    references: dict[str, Any] = {}  # marks a new-shape space for the shared CLI code; no named architectures
    small_options = {"model": "torchvision:mobilenet_v2", "width_mult": 0.25, "resolution": 16, "num_classes": 10}

    def __init__(self, model: str = "torchvision:mobilenet_v2", resolution: int = 224, num_classes: int = 1000,
                 width_mult: float | None = None, model_kwargs: dict[str, Any] | None = None,
                 kinds: list[str] | tuple[str, ...] | None = None, candidates: dict[str, list[str]] | None = None):
        check_number("resolution", resolution, 8, 2048, integer=True)
        check_number("classes", num_classes, 2, 100_000, integer=True)
        if width_mult is not None:
            check_number("width_mult", width_mult, 0.05, 4)
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise HwnasError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}")
        kinds = tuple(kinds) if kinds is not None else tuple(RULES)
        unknown = [k for k in kinds if k not in RULES]
        if unknown:
            raise HwnasError(f"unknown slot kind {unknown[0]!r}; known: {', '.join(RULES)}")
        candidates = dict(candidates or {})
        for kind, names in candidates.items():
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise HwnasError(f"candidates.{kind} must be a non-empty list of candidate names, got {names!r}")
            for n in names:
                if n != ORIGINAL and n not in CANDIDATES:
                    match = difflib.get_close_matches(n, list(CANDIDATES), n=1)
                    raise HwnasError(f"unknown candidate {n!r} for {kind} slots"
                                     + (f" (did you mean {match[0]!r}?)" if match else "")
                                     + f"; known: {', '.join([ORIGINAL, *CANDIDATES])}")
        self.model, self.resolution, self.num_classes = model, resolution, num_classes
        self.width_mult, self.kinds, self.candidate_names = width_mult, kinds, candidates
        self.model_kwargs = {**(model_kwargs or {}), **({"width_mult": width_mult} if width_mult is not None else {})}
        torch.manual_seed(0)  # the original modules' weights: one template per configuration
        self._template = load_model(model, num_classes, self.model_kwargs).eval()
        self.slots = self._convert()
        self._costs: dict[str, dict[str, int]] = {}

    # --- conversion --------------------------------------------------------------------------

    def _convert(self) -> tuple[SlotInfo, ...]:
        found = _find(self._template, self.kinds)
        if not found:
            raise HwnasError(f"--model {self.model} has no slot-able module: no {', '.join(self.kinds)} module "
                             "(rules: torchvision InvertedResidual, ResNet blocks, k x k Conv2d) and no hwnas Slot")
        shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        hooks = []
        for path, _, module in found:
            def hook(mod, args, out, path=path):
                if path not in shapes and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    shapes[path] = (tuple(args[0].shape[1:]), tuple(out.shape[1:]))
            hooks.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                self._template(torch.zeros(self.input_shape(1)))
        except HwnasError:
            raise
        except Exception as e:
            raise HwnasError(f"--model {self.model} fails on a {self.resolution}x{self.resolution} input: "
                             f"{type(e).__name__}: {first_line(e)}") from None
        finally:
            for h in hooks:
                h.remove()
        slots = []
        for path, kind, module in found:
            if path not in shapes or len(shapes[path][0]) != 3 or len(shapes[path][1]) != 3:
                continue  # never run, or not on images: nothing to swap in
            (ci, hi, wi), (co, ho, wo) = shapes[path]
            stride = max(hi // max(ho, 1), 1)
            user = isinstance(module, Slot)
            names = (module.candidates if user and module.candidates else None) or self.candidate_names.get(kind)
            explicit = names is not None
            names = list(names) if explicit else ([] if user else [ORIGINAL]) + candidates_of(kind)
            if user and ORIGINAL in names:
                raise HwnasError(f"slot {path} is a placeholder; it has no {ORIGINAL!r} module")
            kept = []
            for n in names:
                if n == ORIGINAL or self._fits(n, (ci, hi, wi), (co, ho, wo), stride):
                    kept.append(n)
                elif explicit and not CANDIDATES[n].only_where_fits:
                    raise HwnasError(f"candidate {n} does not fit slot {path} ({kind}): it does not turn "
                                     f"{ci}x{hi}x{wi} into {co}x{ho}x{wo}")
            if not kept:
                raise HwnasError(f"slot {path} ({kind}, {ci}x{hi}x{wi} -> {co}x{ho}x{wo}) has no candidate that fits")
            slots.append(SlotInfo(path, kind, ci, co, stride, (ci, hi, wi), (co, ho, wo), tuple(kept), kept[0],
                                  "" if user else content_hash(repr(module), length=12)))
        if not slots:
            raise HwnasError(f"--model {self.model}: no slot-able module runs on image tensors")
        return tuple(slots)

    _fit_cache: dict[tuple, bool] = {}

    @classmethod
    def _fits(cls, name: str, in_shape, out_shape, stride: int) -> bool:
        """The candidate, run on the slot's input shape, gives the slot's output shape."""
        key = (name, tuple(in_shape), tuple(out_shape))
        if key not in cls._fit_cache:
            try:
                with torch.no_grad():
                    y = CANDIDATES[name].make(in_shape[0], out_shape[0], stride).eval()(torch.zeros(1, *in_shape))
                cls._fit_cache[key] = tuple(y.shape[1:]) == tuple(out_shape)
            except Exception:  # a candidate that cannot run on the shape does not fit it
                cls._fit_cache[key] = False
        return cls._fit_cache[key]

    def make_candidate(self, slot: SlotInfo, choice: str) -> nn.Module:
        if choice == ORIGINAL:
            return copy.deepcopy(self._template.get_submodule(slot.name))
        return CANDIDATES[choice].make(slot.c_in, slot.c_out, slot.stride)

    # --- SearchSpace ---------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return {"space": "slots", "model": self.model, "model_kwargs": dict(sorted(self.model_kwargs.items())),
                "resolution": self.resolution, "num_classes": self.num_classes, "kinds": list(self.kinds),
                "candidates": {s.name: list(s.candidates) for s in self.slots}}

    def decisions(self) -> list[tuple[str, tuple[str, ...]]]:
        """One categorical decision per slot: (slot name, its candidates)."""
        return [(s.name, s.candidates) for s in self.slots]

    def validate(self, doc: Any) -> SlotArch:
        names = tuple(s.name for s in self.slots)
        if isinstance(doc, SlotArch):
            doc = doc.to_json()
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), dict):
            raise HwnasError('a slots architecture is {"space": "slots", "choices": {slot: candidate, ...}}')
        if doc.get("space", "slots") != "slots":
            raise HwnasError(f"architecture is of space {doc.get('space')!r}, not slots")
        extra = sorted(set(doc) - {"space", "choices"})
        if extra:
            raise HwnasError(f"unknown architecture field {extra[0]!r}")
        choices = doc["choices"]
        unknown = [k for k in choices if k not in names]
        if unknown:
            raise HwnasError(f"architecture names slot {unknown[0]!r}, which {self.model} does not have")
        out = []
        for s in self.slots:
            c = choices.get(s.name, s.default)
            if c not in s.candidates:
                raise HwnasError(f"choices[{s.name!r}] = {c!r} is not a candidate of that slot; "
                                 f"candidates: {', '.join(s.candidates)}")
            out.append(c)
        return SlotArch(names, tuple(out))

    def arch(self, choices: list[str] | tuple[str, ...]) -> SlotArch:
        return self.validate({"choices": dict(zip((s.name for s in self.slots), choices))})

    def default_arch(self) -> SlotArch:
        return self.arch([s.default for s in self.slots])

    def sample(self, rng: np.random.Generator) -> SlotArch:
        return self.arch([s.candidates[int(rng.integers(len(s.candidates)))] for s in self.slots])

    def build(self, arch) -> nn.Module:
        arch = self.validate(arch)
        net = copy.deepcopy(self._template)
        for slot, choice in zip(self.slots, arch.choices):
            if choice != ORIGINAL:
                _set_module(net, slot.name, self.make_candidate(slot, choice))
        return net.eval()

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, 3, self.resolution, self.resolution)

    # --- traversal metrics ---------------------------------------------------------------------

    def costs(self, arch) -> dict[str, int]:
        """params; MACs of the convolutions and linear layers; memory traffic ("mac": elements
        each of them reads and writes, inputs + outputs + weights), at batch 1."""
        arch = self.validate(arch)
        if arch.hash not in self._costs:
            net = self.build(arch)
            total = {"params": sum(p.numel() for p in net.parameters()), "macs": 0, "mac": 0}

            def hook(m, args, out):
                x = args[0]
                if isinstance(m, nn.Conv2d):
                    total["macs"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
                else:
                    total["macs"] += out.numel() * m.in_features
                total["mac"] += x.numel() + out.numel() + m.weight.numel()

            hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            with torch.no_grad():
                net(torch.zeros(self.input_shape(1)))
            for h in hooks:
                h.remove()
            self._costs[arch.hash] = {k: int(v) for k, v in total.items()}
        return dict(self._costs[arch.hash])

    def params(self, arch) -> int:
        return self.costs(arch)["params"]

    def macs(self, arch) -> int:
        return self.costs(arch)["macs"]

    def slot_specs(self, arch) -> list[dict[str, Any]]:
        arch = self.validate(arch)
        return [s.spec(c) for s, c in zip(self.slots, arch.choices)]

    def __repr__(self) -> str:
        kw = "".join(f", {k}={v}" for k, v in sorted(self.model_kwargs.items()))
        return f"slots({self.model}{kw}, {self.resolution}px, {self.num_classes} classes, {len(self.slots)} slots)"
