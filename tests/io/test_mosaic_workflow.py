"""workflows/mosaic-kmeans.yaml runs as shipped on the tiles `geoseg synth --products tiles` writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import yaml

from geoseg.run.jobspec import load_job
from geoseg.run.workflow import run_job

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_mosaic_workflow_runs_on_generated_tiles(tmp_path, dask_client):
    subprocess.run([sys.executable, "-m", "geoseg.cli", "synth", "landcover", "--out", str(tmp_path / "data"),
                    "--width", "480", "--height", "360", "--products", "tiles"], check=True, capture_output=True)
    assert len(list((tmp_path / "data" / "tiles").glob("tile_*.tif"))) == 4
    (tmp_path / "workflows").mkdir()
    job = yaml.safe_load((ROOT / "workflows" / "mosaic-kmeans.yaml").read_text())
    job.update(chunk_size=128, method={**job["method"], "sample_size": 5000})  # small and quick
    (tmp_path / "workflows" / "mosaic-kmeans.yaml").write_text(yaml.safe_dump(job))
    result = run_job(load_job(tmp_path / "workflows" / "mosaic-kmeans.yaml"), client=dask_client, show_progress=False)
    with rasterio.open(tmp_path / "data" / "landcover_image.tif") as img, rasterio.open(result.outputs["labels"]) as lab:
        assert lab.transform == img.transform and lab.crs == img.crs and lab.shape == img.shape
        labels = lab.read(1)
    assert (labels[:8] == 255).all() and (labels[:, :8] == 255).all()  # the tiles' outer alpha margins
    assert result.metrics_summary is not None and (tmp_path / "out" / "mosaic-kmeans" / "report.html").exists()
    shutil.rmtree(tmp_path / "data")
