"""Export and measure architectures (and parts) of any registered space: the ONNX cache keyed by
content (with its PyTorch parity check) and the measurement store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hwnas.exporters.onnx import cached_export, export_module, randomize_batchnorm
from hwnas.measure.measurer import Item, arch_spec
from hwnas.spaces.base import SearchSpace

EXPORT_SEED = 0  # fixed random weights: the same architecture always gives the same file


def seeded_network(space: SearchSpace, arch) -> torch.nn.Module:
    torch.manual_seed(EXPORT_SEED)
    net = space.build(arch)
    randomize_batchnorm(net, torch.Generator().manual_seed(EXPORT_SEED))  # so BN folding is checked too
    return net.eval()


def export_arch(space: SearchSpace, arch, batch: int = 1, cache_dir: Path | None = None):
    """The architecture's ONNX file (hwnas.exporters.onnx.Exported), exported once per content."""
    arch = space.validate(arch)
    shape = space.input_shape(batch)
    return cached_export({"space": space.config, "arch": arch.to_json(), "batch": batch},
                          lambda path: export_module(seeded_network(space, arch), shape, path), shape, cache_dir)


def _loader(measurer, space: SearchSpace, arch, batch: int):
    if measurer.backend.input == "torch":
        return lambda: (seeded_network(space, arch), space.input_shape(batch))
    return lambda: export_arch(space, arch, batch, measurer.cache_dir).path


def arch_item(measurer, space: SearchSpace, arch, batch: int = 1):
    """What the measurer measures for the whole network (hwnas.measure.Item); stored like the MBConv
    spaces' subnets (kind "arch"), keyed by the space's config, so it never collides with them."""
    arch = space.validate(arch)
    return Item("arch", arch_spec(space, arch, batch), batch, _loader(measurer, space, arch, batch))


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
    batch = input_shape[0]

    def module():
        torch.manual_seed(EXPORT_SEED)
        m = make()
        randomize_batchnorm(m, torch.Generator().manual_seed(EXPORT_SEED))
        return m.eval()

    if measurer.backend.input == "torch":
        load = lambda: (module(), input_shape)  # noqa: E731
    else:
        load = lambda: cached_export({kind: spec, "input_shape": list(input_shape)},  # noqa: E731
                                      lambda path: export_module(module(), input_shape, path), input_shape,
                                      measurer.cache_dir).path
    return Item(kind, spec, batch, load)
