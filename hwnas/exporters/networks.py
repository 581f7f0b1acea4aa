"""Networks of any registered space, and parts of them, as torch modules with fixed weights and
as cached ONNX files. The measurement side (`hwnas.measure`) calls these lazily, so it imports no
torch itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from hwnas.exporters.onnx import Exported, cached_export, export_module, seeded, seeded_layer
from hwnas.spaces.base import SearchSpace
from hwnas.spaces.mbconv import LayerSpec


def seeded_network(space: SearchSpace, arch) -> torch.nn.Module:
    return seeded(lambda: space.build(arch))


def export_network(space: SearchSpace, arch, batch: int = 1, cache_dir: Path | None = None) -> Exported:
    """The architecture's ONNX file, exported once per content."""
    arch = space.validate(arch)
    shape = space.input_shape(batch)
    return cached_export({"space": space.config, "arch": arch.to_json(), "batch": batch},
                         lambda path: export_module(seeded_network(space, arch), shape, path), shape, cache_dir)


def export_part(kind: str, spec: dict[str, Any], make: Callable[[], torch.nn.Module], input_shape: tuple[int, ...],
                cache_dir: Path | None = None) -> Exported:
    """A part of a network (a lookup-table entry), keyed by `spec`: `make()` builds it."""
    return cached_export({kind: spec, "input_shape": list(input_shape)},
                         lambda path: export_module(seeded(make), input_shape, path), input_shape, cache_dir)


def layers_module(specs: list[LayerSpec]) -> torch.nn.Module:
    """Consecutive MBConv layers as one torch module, each with its ONNX file's weights."""
    return torch.nn.Sequential(*(seeded_layer(s) for s in specs))
