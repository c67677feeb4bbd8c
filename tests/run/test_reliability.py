"""Reliability: killed jobs resume to identical output, worker loss is survived, corrupt bytes never crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rasterio
import yaml

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job

from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def _job_dict(scene: Path, out: Path) -> dict:
    return {"name": "rel", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 20000, "features": {"indices": ["ndvi"]}},
            "vectorize": {"enabled": False}, "cluster": {"n_workers": 2, "memory_limit": "2GiB"}}


def _labels(out: Path) -> bytes:
    with rasterio.open(out / "labels.zarr") as ds:
        return ds.read(1).tobytes()


def _markers(out: Path) -> int:
    folder = out / "labels.zarr.partial" / ".geoseg-chunks"
    return len(list(folder.glob("*.done"))) if folder.exists() else 0


def _wait_for_markers(out: Path, n: int, timeout: float = 120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        count = _markers(out)
        if count >= n:
            return count
        time.sleep(0.02)
    raise AssertionError("the job never started writing chunks")


def test_sigkill_of_whole_job_then_rerun_gives_identical_output(tmp_path):
    scene, _ = blocky_scene(tmp_path, height=1500, width=1500)
    ref_out = tmp_path / "ref"
    run_job(parse_job(_job_dict(scene, ref_out)), show_progress=False)

    out = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(_job_dict(scene, out)))
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-q", str(job_file)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_markers(out, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = _markers(out)
    assert done_before < 144, "the job finished before it could be killed"
    assert not (out / "labels.zarr").exists()  # nothing looks finished
    assert json.loads((out / "run.json").read_text())["outcome"] == "running"

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete"
    assert record["chunks_reused"] >= done_before
    assert _labels(out) == _labels(ref_out)


def test_killing_a_worker_mid_run_does_not_change_output(tmp_path):
    from distributed import Client, LocalCluster

    scene, _ = blocky_scene(tmp_path, height=1500, width=1500)
    run_job(parse_job(_job_dict(scene, tmp_path / "ref")), show_progress=False)

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster) as client:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                run_job(parse_job(_job_dict(scene, out)), client=client, show_progress=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_markers(out, 2)
        victim = sorted(client.run(os.getpid).values())[0]
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=600)
        assert not errors, errors
    assert _labels(out) == _labels(tmp_path / "ref")


FUZZ_SCRIPT = r"""
import sys, numpy as np
from pathlib import Path
from geoseg.errors import GeosegError
from geoseg.io.scene import open_scene, read_window
src = Path(sys.argv[1]).read_bytes()
rng = np.random.default_rng(int(sys.argv[2]))
for i in range(int(sys.argv[3])):
    data = bytearray(src)
    mode = i % 3
    if mode == 0:  # flip bytes anywhere
        for pos in rng.integers(0, len(data), 8):
            data[pos] = int(rng.integers(0, 256))
    elif mode == 1:  # damage the header and IFD
        for pos in rng.integers(0, min(len(data), 600), 4):
            data[pos] = int(rng.integers(0, 256))
    else:  # truncate
        data = data[: int(rng.integers(8, len(data)))]
    path = Path(sys.argv[4]) / f"m{i}.tif"
    path.write_bytes(bytes(data))
    try:
        scene = open_scene(str(path))
        for w in scene.chunk_grid(128).windows():
            read_window(scene, w)
        print(i, "ok", flush=True)
    except GeosegError as exc:
        print(i, "geoseg-error", flush=True)
    except Exception as exc:
        print(i, "OTHER", type(exc).__name__, exc, flush=True)
"""


def test_mutated_geotiff_bytes_give_a_result_or_a_clean_error(tmp_path):
    scene, _ = blocky_scene(tmp_path, height=200, width=260)
    n = 60
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, str(scene), "0", str(n), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CPL_LOG": os.devnull},
    )
    assert proc.returncode == 0, f"reader crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    lines = [line for line in proc.stdout.splitlines() if line and line.split()[0].isdigit()]
    assert len(lines) == n
    others = [line for line in lines if "OTHER" in line]
    assert not others, others
    assert any("geoseg-error" in line for line in lines)
