"""``workflows/slovenia-kmeans.yaml`` on the real Slovenia sample: figures per parcel (88 regions).

Skipped where ``../shared/realdata/slovenia`` (or ``$GEOSEG_REALDATA``) is absent. The job file is read as shipped; its
data paths, relative to the repository's folder, are pointed at the real data found.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import rasterize

from geoseg.run.jobspec import load_job
from geoseg.run.workflow import run_job

REALDATA = Path(
    os.environ.get("GEOSEG_REALDATA") or Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "slovenia"
)
if not (REALDATA / "raba_parcels.gpkg").exists():
    pytest.skip(f"real data not present at {REALDATA}", allow_module_level=True)

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "slovenia-kmeans.yaml"
pytestmark = pytest.mark.integration


def _here(p: str | Path) -> str:
    """The shipped path if it exists, else the same file in the real-data folder found."""
    return str(p) if Path(p).exists() else str(REALDATA / Path(p).name)


def test_slovenia_workflow_evaluates_per_parcel(tmp_path: Path, dask_client) -> None:
    job = load_job(WORKFLOW)
    assert job.regions is not None and job.regions.field == "index"
    inputs = [_here(p).replace("*", "{}") for p in job.inputs]
    inputs = sorted(str(p) for p in REALDATA.glob("s2_l1c_reference_scene_*.tif")) if "{}" in inputs[0] else inputs
    job = job.model_copy(update={
        "inputs": inputs, "output": tmp_path / "out",
        "reference": job.reference.model_copy(update={"path": Path(_here(job.reference.path))}),
        "regions": job.regions.model_copy(update={"path": Path(_here(job.regions.path))}),
    })  # fmt: skip
    run_job(job, client=dask_client, show_progress=False)
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv", dtype={"region_id": str})
    parcels = gpd.read_file(job.regions.path)
    rows = metrics[(metrics["kind"] == "region") & (metrics["region_id"] != "ALL")]
    assert len(parcels) == 88 and len(rows) == 88
    assert sorted(rows["region_id"].astype(int)) == sorted(parcels["index"].astype(int))
    # each parcel's pixels = that parcel rasterised alone (GDAL), scored or excluded
    with rasterio.open(job.inputs[0]) as src:
        transform, shape = src.transform, (src.height, src.width)
    for row in rows.sample(12, random_state=0).itertuples():
        geom = parcels.loc[parcels["index"].astype(int) == int(row.region_id), "geometry"].iloc[0]
        alone = rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0).astype(bool)
        assert int(row.total_px) == int(alone.sum()), row.region_id
    assert np.isfinite(rows["miou"]).sum() > 40
