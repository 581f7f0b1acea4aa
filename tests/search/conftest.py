"""Fixtures the cell searches' tests share: a little real data and a real, quickly built cell table."""

from __future__ import annotations

import pytest

from hwnas.spaces import get_space


@pytest.fixture(scope="module")
def digits():
    from hwnas.data import load_dataset

    return load_dataset("digits", seed=0, limit=120)


@pytest.fixture(scope="module")
def torch_cell_table(tmp_path_factory):
    """(space, cell table, measurer) at C=4, 3 cells, 8 px, measured on torch-cpu."""
    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.latency.cells import CellLatencyTable
    from hwnas.measure import Measurer
    from hwnas.store import Store

    tmp = tmp_path_factory.mktemp("cells")
    space = get_space("darts", channels=4, cells=3, num_classes=10, resolution=8)
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0, processes=1, reference=False)
    # PyTorch on the CPU: real timings without an ONNX export per part (~3 s for the table, not ~60 s)
    measurer = Measurer(get_backend("torch-cpu"), Store(tmp / "m.sqlite"), protocol, cache_dir=tmp)
    table = CellLatencyTable.build(space, measurer, show_progress=False)
    yield space, table, measurer
    measurer.store.close()
