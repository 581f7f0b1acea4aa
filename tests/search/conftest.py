"""Fixtures the cell searches' tests share: a little real data and a real, quickly built cell table."""

from __future__ import annotations

import pytest

from hwnas.spaces import get_space


@pytest.fixture(scope="module")
def digits():
    from hwnas.data import load_dataset

    return load_dataset("digits", seed=0, limit=120)


def _cell_table(tmp, backend: str, **size):
    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.latency.cells import CellLatencyTable
    from hwnas.measure import Measurer
    from hwnas.store import Store

    space = get_space("darts", num_classes=10, resolution=8, **size)
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0, processes=1, reference=False)
    measurer = Measurer(get_backend(backend), Store(tmp / "m.sqlite"), protocol, cache_dir=tmp)
    return space, CellLatencyTable.build(space, measurer, show_progress=False), measurer


@pytest.fixture(scope="session")
def make_cell_table():
    """make_cell_table(dir, backend, **size) -> (space, cell table, measurer): a real table of the
    darts space at `size` on `backend`, with a fast one-process protocol; close the store when done."""
    return _cell_table


@pytest.fixture(scope="module")
def torch_cell_table(tmp_path_factory, make_cell_table):
    """At C=4, 3 cells, 8 px on torch-cpu: real timings without an ONNX export per part (~3 s for
    the table, not ~60 s)."""
    space, table, measurer = make_cell_table(tmp_path_factory.mktemp("cells"), "torch-cpu", channels=4, cells=3)
    yield space, table, measurer
    measurer.store.close()
