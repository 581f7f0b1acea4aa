"""Architectures (and parts) of any registered space as measurement items: stored like the MBConv
spaces' subnets, loaded as a cached ONNX file or, for a torch backend, a torch module. Both come
from `hwnas.exporters.networks`, imported only when an item is loaded: this module needs no torch."""

from __future__ import annotations

from typing import Any

from hwnas.measure.measurer import Item, arch_spec
from hwnas.spaces.base import SearchSpace


def arch_item(measurer, space: SearchSpace, arch, batch: int = 1):
    """What the measurer measures for the whole network (hwnas.measure.Item); stored like the MBConv
    spaces' subnets (kind "arch"), keyed by the space's config, so it never collides with them."""
    arch = space.validate(arch)

    def load():
        from hwnas.exporters.networks import export_network, seeded_network

        if measurer.backend.input == "torch":
            return seeded_network(space, arch), space.input_shape(batch)
        return export_network(space, arch, batch, measurer.cache_dir).path

    return Item("arch", arch_spec(space, arch, batch), batch, load)


def measure_arch(measurer, space: SearchSpace, arch, batch: int = 1, force: bool = False):
    """Measured (hwnas.measure) of the whole network."""
    return measurer.measure(arch_item(measurer, space, arch, batch), force)


def measure_module(measurer, kind: str, spec: dict[str, Any], make, input_shape: tuple[int, ...],
                   force: bool = False):
    """A part of a network (a lookup-table entry): `make()` builds it, keyed by `spec`."""
    return measurer.measure(module_item(measurer, kind, spec, make, input_shape), force)


def module_item(measurer, kind: str, spec: dict[str, Any], make, input_shape: tuple[int, ...]):
    """What the measurer measures for a part: exported (cached) when it is loaded, so `measurer.many`
    exports the next part while the worker times this one."""

    def load():
        from hwnas.exporters.networks import export_part
        from hwnas.exporters.onnx import seeded

        if measurer.backend.input == "torch":
            return seeded(make), input_shape
        return export_part(kind, spec, make, input_shape, measurer.cache_dir).path

    return Item(kind, spec, input_shape[0], load)
