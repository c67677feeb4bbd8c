"""The local cluster geoseg starts, and the worker environment the deployment recipes share with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoseg.cluster import WORKER_ENV, connect
from geoseg.errors import ClusterError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _worker_env() -> str | None:
    return os.environ.get("MALLOC_MMAP_THRESHOLD_")


@pytest.mark.integration
def test_local_cluster_listens_on_loopback_and_gives_workers_geoseg_environment():
    with connect(None, n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard=False) as (client, info):
        seen = client.run(_worker_env)
    assert info.kind == "local" and info.n_workers == 2 and info.threads == 2
    assert info.scheduler.startswith("tcp://127.0.0.1:")
    assert set(seen.values()) == {WORKER_ENV["MALLOC_MMAP_THRESHOLD_"]}


@pytest.mark.parametrize("recipe", ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "slurm/geoseg.sbatch"])
def test_deployment_recipes_give_workers_the_same_environment(recipe):
    text = (DEPLOY / recipe).read_text()
    for name, value in WORKER_ENV.items():
        assert f"{name}={value}" in text or f'{name}="${{{name}:-{value}}}"' in text, (recipe, name)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        with connect("tcp://127.0.0.1:9", timeout=2):
            pass
