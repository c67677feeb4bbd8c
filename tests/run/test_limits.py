"""Limits and hangs: what the machine cannot hold, a scheduler that never answers, a decompression bomb.

Each is refused by the ``geoseg`` command (a subprocess, timed) in one line and exit 2 within 15 s,
before any worker starts; the library functions behind it are checked on their own too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import yaml

from geoseg.errors import ClusterError, OutputError
from geoseg.io import storage
from geoseg.run import limits
from tests.fixtures import blocky_scene

REPO = Path(__file__).resolve().parents[2]
#: The bar: a one-line error and exit 2 within this many seconds, process start and imports included.
BAR_S = 15


def _cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", *args], capture_output=True, text=True,
                          timeout=120, env=environ)
    return proc.returncode, proc.stderr, time.perf_counter() - t0


def _job(tmp_path: Path, image: Path, **over) -> Path:
    job = {"name": "limits", "inputs": [str(image)], "output": str(tmp_path / "out"), "chunk_size": 128,
           "vectorize": {"enabled": False}, **over}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _one_line_error(rc: int, err: str, seconds: float, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith("geoseg: error: ") and err.count("\n") == 1, err
    assert "unexpected" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert seconds < BAR_S, seconds


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path, _ = blocky_scene(tmp_path_factory.mktemp("limits"), height=128, width=128)
    return path


def test_a_cluster_larger_than_the_machine_is_refused_before_any_worker_starts(tmp_path, image):
    job = _job(tmp_path, image, cluster={"n_workers": 256, "threads_per_worker": 64})
    rc, err, seconds = _cli(["run", str(job)])
    _one_line_error(rc, err, seconds, "256 workers x 64 threads = 16384 threads", "core")
    assert not (tmp_path / "out").exists()  # refused before the run claimed its folder


def test_a_memory_limit_below_one_chunk_is_refused_before_any_worker_starts(tmp_path, image):
    rc, err, seconds = _cli(["run", str(_job(tmp_path, image, cluster={"memory_limit": "1MiB"}))])
    _one_line_error(rc, err, seconds, "cluster.memory_limit 1 MiB is less than one chunk needs")
    assert not (tmp_path / "out").exists()


def test_a_scheduler_port_that_accepts_and_never_answers_is_an_error_within_the_timeout(tmp_path, image):
    accepted: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(60)

        def accept() -> None:
            try:
                while True:
                    accepted.append(server.accept()[0])  # kept open, never written to
            except OSError:
                pass

        threading.Thread(target=accept, daemon=True).start()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        rc, err, seconds = _cli(["run", str(_job(tmp_path, image)), "--scheduler", address, "--connect-timeout", "3"])
    for conn in accepted:
        conn.close()
    _one_line_error(rc, err, seconds, f"{address} did not complete the handshake within 3 s")
    assert accepted  # the witness: geoseg did connect, and gave up on the silence


def test_a_deflate_bomb_is_refused_from_its_header(tmp_path):
    """A 20,000 x 20,000 px file in one deflated tile: a few hundred kB that any read unpacks to 400 MB."""
    bomb = tmp_path / "bomb.tif"
    profile = {"driver": "GTiff", "width": 20_000, "height": 20_000, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": rasterio.Affine(10, 0, 500_000, 0, -10, 5_000_000), "compress": "deflate",
               "tiled": True, "blockxsize": 20_000, "blockysize": 20_000}
    with rasterio.open(bomb, "w", **profile) as dst:
        for y in range(0, 20_000, 5_000):
            dst.write(np.zeros((1, 5_000, 20_000), np.uint8), window=rasterio.windows.Window(0, y, 20_000, 5_000))
    assert bomb.stat().st_size < 2_000_000
    rc, err, seconds = _cli(["run", str(_job(tmp_path, bomb))])
    _one_line_error(rc, err, seconds, "bomb.tif is stored in blocks of 20000 x 20000 px", "re-tile it")


@pytest.fixture(autouse=True)
def _no_aws_keys(monkeypatch):
    """No credentials in this process's environment, so none in the command's either."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def test_s3_without_credentials_is_a_clear_error(tmp_path, image):
    pytest.importorskip("s3fs")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    rc, err, seconds = _cli(["run", str(_job(tmp_path, image, output="s3://bucket/runs/a"))], env=env)
    _one_line_error(rc, err, seconds, "no usable credentials for s3://bucket/runs/a", "AWS_ACCESS_KEY_ID")


def test_a_tls_address_without_certificates_is_a_clear_error():
    from geoseg.run.cluster import connect

    with pytest.raises(ClusterError, match="TLS address but Dask has no TLS settings"), \
            connect("tls://127.0.0.1:9", timeout=2):
        pass


def test_a_worker_killed_again_and_again_is_reported_as_memory_advice():
    from distributed.scheduler import KilledWorker

    error = limits.user_error(KilledWorker("label_task-abc", SimpleNamespace(address="tcp://127.0.0.1:4000"), 3))
    assert isinstance(error, ClusterError) and "memory_limit" in str(error) and "chunk_size" in str(error)
    assert limits.user_error(ValueError("x")) is None


def test_the_default_memory_limit_fits_the_machine(monkeypatch):
    monkeypatch.setattr(limits, "machine", lambda: (2, 6 * 2**30))  # a small laptop
    assert limits.local_memory_limit(None, 2) == 3 * 2**30  # 4 GiB would promise more than there is
    assert limits.local_memory_limit(None, 1) == limits.DEFAULT_MEMORY_LIMIT
    assert limits.local_memory_limit("1GiB", 2) == 2**30
    limits.check_local_cluster(2, 4, 3 * 2**30)  # 8 threads on 2 cores: allowed
    with pytest.raises(ClusterError, match="more than this machine's 6.0 GiB of RAM; lower memory_limit to at most 3.0"):
        limits.check_local_cluster(2, 1, 4 * 2**30)
    with pytest.raises(ClusterError, match="at most 8 threads"):
        limits.check_local_cluster(3, 3, 2**30)


def test_the_working_set_of_a_chunk_counts_reads_and_method(tmp_path, image):
    from geoseg.io.scene import open_scene
    from geoseg.run.jobspec import KMeansConfig, ThresholdConfig

    scene = open_scene(str(image))
    kmeans = limits.chunk_working_set(scene, 128, KMeansConfig(n_clusters=6))
    more = limits.chunk_working_set(scene, 128, KMeansConfig(n_clusters=200))
    threshold = limits.chunk_working_set(scene, 128, ThresholdConfig())
    assert limits.WORKER_BASELINE < threshold.bytes < kmeans.bytes < more.bytes
    assert more.bytes - kmeans.bytes == 128 * 128 * 4 * 194  # a float32 distance per pixel and cluster
    limits.check_memory_limit(2**30, kmeans)
    expected = ("at least 162 MiB: 128 x 128 px x 4 band.s. of uint16, k-means, 4 features, 6 clusters"
                ".*give at least 192 MiB per worker, or a smaller chunk_size")
    with pytest.raises(ClusterError, match=expected):
        limits.check_memory_limit(2**20, kmeans)


def test_memory_sizes_are_read_as_dask_writes_them():
    assert limits.parse_memory("2GiB") == 2 * 2**30 and limits.parse_memory("500MB") == 500 * 10**6
    with pytest.raises(ClusterError, match="not a size"):
        limits.parse_memory("lots")


def test_storage_credential_errors_name_the_url():
    class NoCredentialsError(Exception):  # botocore's name; botocore itself is optional here
        pass

    mapped = storage.credential_error(NoCredentialsError("Unable to locate credentials"), "s3://b/p")
    assert isinstance(mapped, OutputError) and "s3://b/p" in str(mapped)
    assert storage.credential_error(KeyError("x"), "s3://b/p") is None
