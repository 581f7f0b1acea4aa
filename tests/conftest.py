"""Shared fixtures: tiny spaces and a fast protocol, so real measurements stay quick; every
test session exports and measures into its own temporary cache, never the user's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hwnas.backends import MeasureProtocol, get_backend
from hwnas.measure import Measurer
from hwnas.spaces.mbconv import Space
from hwnas.store import Store
from hwnas.surrogates.data import measured_subnets, sample
from hwnas.surrogates.lut import LookupTable


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("hwnas-cache")
    mp.setenv("HWNAS_CACHE", str(cache))
    mp.setenv("HWNAS_DB", str(cache / "default.sqlite"))
    yield cache
    mp.undo()


@pytest.fixture
def tiny_space() -> Space:
    return Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)


@pytest.fixture
def fast_protocol() -> MeasureProtocol:
    return MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0, processes=1)


@pytest.fixture
def pg_url() -> str:
    """The test PostgreSQL database (`.ci/postgres.sh` starts it), emptied of hwnas's tables."""
    import os

    url = os.environ.get("HWNAS_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL server: HWNAS_TEST_PG_URL is unset (source .ci/postgres.sh to start one)")
    drop_store_tables(url)
    return url


def drop_store_tables(url: str) -> None:
    import sqlalchemy as sa

    from hwnas.store import store_url

    engine = sa.create_engine(store_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS meta, measurements, replicates, reference_baselines, other CASCADE")
    engine.dispose()


# One tiny space measured once per test session: its lookup table and a few dozen subnets.
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
