"""``geoseg demo``: the whole k-means land-cover workflow on a generated scene, on a local cluster."""

from __future__ import annotations

import logging
from pathlib import Path

from geoseg.legend import LANDCOVER_CLASSES, legend_to_json
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import RunResult, run_job
from geoseg.samples.synthetic import make_scene

log = logging.getLogger(__name__)


def demo_job(data_dir: Path, out_dir: Path, n_workers: int = 2) -> dict:
    """The demo's job, as the dict a job file would hold (also written next to the outputs)."""
    return {
        "name": "demo-landcover-kmeans",
        "inputs": [str(data_dir / "landcover_image.tif")],
        "output": str(out_dir),
        "chunk_size": 1024,
        "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 200_000, "seed": 0,
                   "features": {"indices": ["ndvi", "ndwi"]}},
        "classes": legend_to_json(LANDCOVER_CLASSES),
        "reference": {"path": str(data_dir / "landcover_reference.tif")},
        "regions": {"path": str(data_dir / "landcover_regions.gpkg"), "field": "region_id"},
        "evaluate": {"mapping": "hungarian"},
        "cluster": {"n_workers": n_workers, "threads_per_worker": 1, "memory_limit": "3GiB"},
    }


def run_demo(folder: Path, size: int = 2048, seed: int = 0, n_workers: int = 2) -> RunResult:
    """Generate (or reuse) the sample scene under ``folder/data`` and run the job into ``folder/output``."""
    import yaml

    data_dir = folder / "data"
    if not (data_dir / "landcover_image.tif").exists() or _size_of(data_dir / "landcover_image.tif") != (size, size):
        log.info("generating a %dx%d landcover scene in %s", size, size, data_dir)
        make_scene("landcover", data_dir, width=size, height=size, seed=seed)
    job_dict = demo_job(data_dir.resolve(), (folder / "output").resolve(), n_workers)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo-job.yaml").write_text(yaml.safe_dump(job_dict, sort_keys=False))
    return run_job(parse_job(job_dict, "demo job"))


def _size_of(path: Path) -> tuple[int, int]:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.width, ds.height
