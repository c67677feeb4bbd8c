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
    assert info.dashboard is None  # none was asked for, so none is printed or recorded
    for env in seen.values():
        for name, value in WORKER_ENV.items():
            assert env.get(name) == value  # set before the worker process started, so glibc used it
        assert "MALLOC_TRIM_THRESHOLD_" in env  # Dask's own spawn settings are kept


@pytest.mark.integration
def test_a_local_cluster_without_dashboard_keeps_off_the_dashboard_port():
    """Its HTTP routes (health, metrics) take a free loopback port, not 8787, and answer there."""
    import urllib.request

    from distributed import Client

    from geoseg.run.cluster import start_local_cluster

    with start_local_cluster(1, 1, "1GiB", dashboard=False) as cluster, Client(cluster) as client:
        port = client.scheduler_info()["services"]["dashboard"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as reply:
            body = reply.read()
    assert port != 8787 and body == b"ok"


@pytest.mark.parametrize("recipe", ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "slurm/geoseg.sbatch"])
def test_deployment_recipes_give_workers_the_same_environment(recipe):
    text = (DEPLOY / recipe).read_text()
    for name, value in WORKER_ENV.items():
        assert f"{name}={value}" in text or f'{name}="${{{name}:-{value}}}"' in text, (recipe, name)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"), connect("tcp://127.0.0.1:9", timeout=2):
        pass


def test_the_default_connect_timeout_is_ten_seconds():
    import inspect

    from geoseg.run.jobspec import parse_job

    assert inspect.signature(connect).parameters["timeout"].default == 10
    assert parse_job({"name": "j", "inputs": ["a.tif"], "output": "o"}).cluster.connect_timeout == 10


@pytest.mark.parametrize("where", ["job", "cli"])
def test_a_scheduler_that_does_not_answer_fails_within_the_connect_timeout(tmp_path, capsys, where):
    """Finding 10: ``--scheduler tcp://127.0.0.1:1`` took 61 s; now the job's or the CLI's timeout holds."""
    import time

    import yaml

    from geoseg.cli import main
    from tests.fixtures import blocky_scene

    scene, _ = blocky_scene(tmp_path, height=128, width=128)
    job = {"name": "t", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128}
    argv = ["run", str(tmp_path / "job.yaml"), "--scheduler", "tcp://127.0.0.1:1"]
    if where == "job":
        job["cluster"] = {"connect_timeout": 2}
    else:
        argv += ["--connect-timeout", "2"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    t0 = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 2 s" in err
    assert 1.5 < elapsed < 8
