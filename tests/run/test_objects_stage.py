"""The optional objects stage of a run: objects.csv and instances.zarr next to labels.zarr."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def test_objects_stage_in_a_threshold_run(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path)
    job = parse_job({
        "name": "obj", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.5,
                   "classes": [{"id": 1, "name": "bare"}, {"id": 2, "name": "green"}]},
        "regions": {"grid_cell_m": 1000.0},
        "objects": {"classes": [2], "instance_raster": True},
        "vectorize": {"enabled": False},
    })
    result = run_job(job, client=dask_client, show_progress=False)
    with rasterio.open(tmp_path / "out" / "labels.zarr") as ds:
        labels = ds.read(1)
    with rasterio.open(result.outputs["instances"]) as ds:
        inst = ds.read(1)
    want, n = ndimage.label(labels == 2, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
    assert n > 3 and inst.tobytes() == want.astype(np.uint32).tobytes()
    rows = list(csv.DictReader(result.outputs["objects"].read_text().splitlines()))
    assert rows[0]["region"] == "ALL" and int(rows[0]["objects"]) == n
    assert rows[0]["class_name"] == "green"
    assert sum(int(r["objects"]) for r in rows[1:]) == n
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert "objects" in record["stage_seconds"]
