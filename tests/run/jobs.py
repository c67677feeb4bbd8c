"""Helpers of the reliability and chaos tests: one small k-means job, its labels, its progress."""

from __future__ import annotations

import time
from pathlib import Path

import rasterio


def kmeans_job_dict(scene: Path, out: Path) -> dict:
    """A k-means job on ``scene`` without vectors, on 2 local workers."""
    return {"name": "rel", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 20000, "features": {"indices": ["ndvi"]}},
            "vectorize": {"enabled": False}, "cluster": {"n_workers": 2, "memory_limit": "2GiB"}}


def label_bytes(out: Path) -> bytes:
    """The finished labels of a job's output folder, as GDAL reads them."""
    with rasterio.open(out / "labels.zarr") as ds:
        return ds.read(1).tobytes()


def chunk_markers(out: Path) -> int:
    """How many chunks a running job has finished (its ``.done`` markers)."""
    folder = out / "labels.zarr.partial" / ".geoseg-chunks"
    return len(list(folder.glob("*.done"))) if folder.exists() else 0


def wait_for_markers(out: Path, n: int, timeout: float = 120) -> int:
    """Block until the job has finished ``n`` chunks; fail after ``timeout`` seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        count = chunk_markers(out)
        if count >= n:
            return count
        time.sleep(0.02)
    raise AssertionError("the job never started writing chunks")
