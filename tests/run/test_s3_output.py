"""A job whose output is an s3:// prefix on a loopback S3 server gives what the same job gives on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas
import pytest
import rasterio
import yaml

from geoseg.io import storage
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_classes, blocky_scene, write_raster
from tests.s3server import s3_bucket, s3_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def _job(scene: Path, reference: Path | None, out: str, **over) -> dict:
    job = {"name": "s3", "inputs": [str(scene)], "output": out, "chunk_size": 128,
           "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 20000, "features": {"indices": ["ndvi"]}},
           "vectorize": {"enabled": True}, "cluster": {"n_workers": 2, "memory_limit": "2GiB"}}
    if reference is not None:
        job["reference"] = {"path": str(reference)}
    job.update(over)
    return job


def _inputs(tmp_path: Path, height: int, width: int) -> tuple[Path, Path]:
    scene, _ = blocky_scene(tmp_path, height=height, width=width)
    reference = write_raster(tmp_path / "reference.tif", blocky_classes(height, width), nodata=255)
    return scene, reference


def _pixels(labels: str) -> bytes:
    path = f'ZARR:"/vsis3/{labels[5:]}":/labels' if labels.startswith("s3://") else labels
    with rasterio.open(path) as ds:
        return ds.read(1).tobytes()


def test_job_on_s3_equals_job_on_disk_and_is_published(tmp_path, s3_bucket):  # noqa: F811
    scene, reference = _inputs(tmp_path, 400, 420)
    local = run_job(parse_job(_job(scene, reference, str(tmp_path / "local"))), show_progress=False)
    url = storage.join(s3_bucket, "runs", "a")
    remote = run_job(parse_job(_job(scene, reference, url)), show_progress=False)

    assert remote.outputs["labels"] == storage.join(url, "labels.zarr")
    assert _pixels(remote.outputs["labels"]) == _pixels(str(local.outputs["labels"]))
    csv = storage.read_text(remote.outputs["metrics_csv"] if "metrics_csv" in remote.outputs
                            else storage.join(url, "metrics.csv"))
    assert csv == (tmp_path / "local" / "metrics.csv").read_text()
    manifest = storage.read_manifest(url)
    assert manifest is not None and {"labels", "polygons", "run", "model"} <= set(manifest["outputs"])
    for entry in manifest["outputs"].values():
        assert storage.exists(entry["url"]) and entry["bytes"] > 0
    fs, key = storage.filesystem(storage.join(url, "polygons.gpkg"))
    fs.get_file(key, str(tmp_path / "p.gpkg"))
    got, want = (sorted(zip(g["class_id"], g.geometry.normalize().to_wkt()))
                 for g in (geopandas.read_file(p, layer="polygons")
                           for p in (tmp_path / "p.gpkg", tmp_path / "local" / "polygons.gpkg")))
    assert len(want) > 0 and got == want
    record = json.loads(storage.read_text(storage.join(url, "run.json")))
    assert record["outcome"] == "complete" and record["outputs"]["labels"] == remote.outputs["labels"]


def test_sigkill_during_labelling_on_s3_then_rerun_gives_identical_output(tmp_path, s3_bucket):  # noqa: F811
    scene, _ = blocky_scene(tmp_path, height=1500, width=1500)
    reference, over = None, {"vectorize": {"enabled": False}}
    local = run_job(parse_job(_job(scene, reference, str(tmp_path / "local"), **over)), show_progress=False)
    url = storage.join(s3_bucket, "killed")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(_job(scene, reference, url, **over)))
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-q", str(job_file)]
    markers = storage.join(url, "labels.zarr", ".geoseg-chunks")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while len(storage.listdir(markers)) < 3:
            assert time.time() - t0 < 180, "the job never started writing chunks"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(storage.listdir(markers))
    assert done_before < 144, "the job finished before it could be killed"
    assert storage.read_manifest(url) is None  # nothing is published
    assert not storage.exists(storage.join(url, "labels.zarr", ".zmetadata"))
    assert json.loads(storage.read_text(storage.join(url, "run.json")))["outcome"] == "running"
    killed_lock = json.loads(storage.read_text(storage.join(url, storage.LOCK_OBJECT)))
    assert killed_lock["pid"] == proc.pid  # left by the killed run; the rerun takes it over (dead pid, this host)

    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads(storage.read_text(storage.join(url, "run.json")))
    assert record["outcome"] == "complete" and record["chunks_reused"] >= done_before
    assert storage.read_manifest(url) is not None
    assert not storage.exists(storage.join(url, storage.LOCK_OBJECT))  # released
    assert _pixels(storage.join(url, "labels.zarr")) == _pixels(str(local.outputs["labels"]))
