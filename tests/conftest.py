"""Shared pytest fixtures: one real multi-process Dask cluster per session, the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures import REALDATA


@pytest.fixture(scope="session")
def dask_client():
    """A real local cluster as geoseg starts it: 2 worker processes, 1 thread each, on loopback."""
    from distributed import Client

    from geoseg.run.cluster import start_local_cluster

    cluster = start_local_cluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB", dashboard=True)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture()
def realdata() -> Path:
    if not REALDATA.exists():
        pytest.skip("../shared/realdata/slovenia is not present (GEOSEG_REALDATA=DIR points elsewhere)")
    return REALDATA


def pytest_configure(config) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
