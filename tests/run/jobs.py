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
    """How many chunks a running job has finished (its ``.done`` markers; not a hidden temporary one being written,
    ``.KEY.PID-UUID.geoseg-tmp.done``, which a kill can leave behind and a resume rightly ignores)."""
    folder = out / "labels.zarr.partial" / ".geoseg-chunks"
    return len([p for p in folder.glob("*.done") if not p.name.startswith(".")]) if folder.exists() else 0


def wait_for_markers(out: Path, n: int, timeout: float = 120) -> int:
    """Block until the job has finished ``n`` chunks; fail after ``timeout`` seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        count = chunk_markers(out)
        if count >= n:
            return count
        time.sleep(0.02)
    raise AssertionError("the job never started writing chunks")


def landcover_job_dict(files, out: Path) -> dict:  # a geoseg.samples SceneFiles
    """A k-means job with a reference and regions, evaluated and vectorised, in 128 px chunks on 2 workers."""
    from geoseg.legend import LANDCOVER_CLASSES, legend_to_json

    return {"name": "kill", "inputs": [str(files.image)], "output": str(out), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 20000, "seed": 0,
                       "features": {"indices": ["ndvi", "ndwi"]}},
            "classes": legend_to_json(LANDCOVER_CLASSES),
            "reference": {"path": str(files.reference)},
            "regions": {"path": str(files.regions), "field": "region_id"},
            "evaluate": {"mapping": "hungarian"},
            "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"}}


def polygon_summary(path: Path) -> dict[int, tuple[int, float]]:
    """Per class id: how many polygons and their total area (from the geometries, as OGR reads them)."""
    import numpy as np
    import pyogrio
    import shapely

    df = pyogrio.read_dataframe(path, layer="polygons")
    areas = shapely.area(df.geometry.values)
    classes = df["class_id"].to_numpy()
    return {int(c): (int((classes == c).sum()), float(np.sort(areas[classes == c]).sum())) for c in np.unique(classes)}


def polygon_set(path: Path) -> list[bytes]:
    """Every polygon as normalised WKB, sorted: equal lists mean the same polygons, whatever the write order."""
    import pyogrio
    import shapely

    df = pyogrio.read_dataframe(path, layer="polygons")
    return sorted(shapely.to_wkb(shapely.normalize(df.geometry.values), output_dimension=2))
