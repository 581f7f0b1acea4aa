"""One tiny space measured once per test session: its lookup table and a few dozen subnets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hwnas.measure import Measurer
from hwnas.profilers import MeasureProtocol, get_backend
from hwnas.space import Space
from hwnas.store import Store
from hwnas.surrogates.data import measured_subnets, sample
from hwnas.surrogates.lut import LookupTable

WIDTH_STEP = 64  # grids of 2-3 widths per op: some interior grid points, few measurements


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Exporting hundreds of tiny layers: torch's threads only contend (3x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    space = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    store = Store(tmp_path_factory.mktemp("surrogates") / "store.sqlite")
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=20, min_time_s=0.0, processes=1, reference=False)
    measurer = Measurer(get_backend("ort-cpu"), store, protocol)
    lut = LookupTable.build(space, measurer, batch=1, width_step=WIDTH_STEP, show_progress=False)
    sample(space, measurer, 30, seed=0, show_progress=False)
    yield SimpleNamespace(space=space, measurer=measurer, lut=lut, data=measured_subnets(measurer, space))
    store.close()
