"""The local cluster geoseg starts, and the worker environment the deployment recipes share with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import ClusterError
from geoseg.run.cluster import WORKER_ENV, connect

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _start_environment() -> dict[str, str]:
    """The environment this process was started with (what glibc read), not ``os.environ`` now."""
    raw = Path("/proc/self/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_local_cluster_listens_on_loopback_and_starts_workers_with_geoseg_environment():
    with connect(None, n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard=False) as (client, info):
        seen = client.run(_start_environment)
    assert info.kind == "local" and info.n_workers == 2 and info.threads == 2
    assert info.scheduler.startswith("tcp://127.0.0.1:")
    for env in seen.values():
        for name, value in WORKER_ENV.items():
            assert env.get(name) == value  # set before the worker process started, so glibc used it
        assert "MALLOC_TRIM_THRESHOLD_" in env  # Dask's own spawn settings are kept


@pytest.mark.parametrize("recipe", ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "slurm/geoseg.sbatch"])
def test_deployment_recipes_give_workers_the_same_environment(recipe):
    text = (DEPLOY / recipe).read_text()
    for name, value in WORKER_ENV.items():
        assert f"{name}={value}" in text or f'{name}="${{{name}:-{value}}}"' in text, (recipe, name)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        with connect("tcp://127.0.0.1:9", timeout=2):
            pass
