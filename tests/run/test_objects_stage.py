"""The optional objects stage of a run: objects.csv and instances.zarr next to labels.zarr."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene, write_raster

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


def test_objects_with_a_presence_only_vector_reference(tmp_path, dask_client):
    """A reference layer with ``value: N`` (every polygon is class N) is opened for objects as for evaluation."""
    from rasterio.features import rasterize

    from tests.fixtures import TRANSFORM, write_regions

    scene, _ = blocky_scene(tmp_path)
    rects = [(30, 40, 70, 90), (120, 150, 160, 230), (200, 20, 260, 60)]
    ref = write_regions(tmp_path / "ref.gpkg", rects, [1, 2, 3])
    job = parse_job({
        "name": "objv", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.5,
                   "classes": [{"id": 1, "name": "bare"}, {"id": 2, "name": "green"}]},
        "reference": {"path": str(ref), "value": 2, "background": 1},
        "objects": {"classes": [2]}, "vectorize": {"enabled": False},
    })
    result = run_job(job, client=dask_client, show_progress=False)
    rows = list(csv.DictReader(result.outputs["objects"].read_text().splitlines()))
    import geopandas as gpd

    burnt = rasterize(gpd.read_file(ref).geometry, out_shape=(300, 340), transform=TRANSFORM, fill=0, default_value=1)
    _, n_ref = ndimage.label(burnt, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
    assert rows[0]["region"] == "ALL" and int(rows[0]["reference_objects"]) == n_ref == 3


class _Tables(HTMLParser):
    """Cells of every <table> after the ``Objects`` heading (stdlib parser: independent of the renderer)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_objects = False
        self.heading = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.heading = True
        elif self.in_objects and tag == "tr":
            self.rows.append([])
        elif self.in_objects and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "h2":
            self.heading = False
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.heading:
            self.in_objects = data.strip() == "Objects"
        elif self.cell is not None:
            self.cell.append(data)


def _objects_and_matches(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """Independent oracle: objects on each side (scipy) and predicted objects with IoU >= 0.5 to a reference one."""
    four = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    lp, n_p = ndimage.label(pred, structure=four)
    lr, n_r = ndimage.label(ref, structure=four)
    matched = 0
    for i in range(1, n_p + 1):
        a = lp == i
        for j in np.unique(lr[a]):
            if j and (a & (lr == j)).sum() / (a | (lr == j)).sum() >= 0.5:
                matched += 1
                break
    return n_p, n_r, matched


def test_report_shows_the_objects_table_of_objects_csv(tmp_path, dask_client):
    """With a reference, report.html gets an objects table equal to objects.csv, and its scores are right."""
    scene, classes = blocky_scene(tmp_path)
    ref = np.where(classes == 0, 2, 1).astype(np.uint8)  # NDVI > 0.5 is exactly class 0 of the blocky scene
    ref[37:74, 48 * 3 + 1 : 48 * 4 - 11] = 1  # one field missing from the reference: a false positive
    ref[0:37, 48 * 4 : 48 * 4 + 14] = 1  # one field cut to 14 of 37 columns: IoU < 0.5, unmatched both ways
    with rasterio.open(scene) as ds:
        tr, crs = ds.transform, ds.crs
    reference = write_raster(tmp_path / "ref.tif", ref, transform=tr, crs=crs.to_string(), nodata=0)
    job = parse_job({
        "name": "objrep", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.5,
                   "classes": [{"id": 1, "name": "bare"}, {"id": 2, "name": "green"}]},
        "reference": {"path": str(reference)}, "evaluate": {"mapping": "identity"},
        "regions": {"grid_cell_m": 1000.0},
        "objects": {"classes": [2]},
        "vectorize": {"enabled": False},
    })
    result = run_job(job, client=dask_client, show_progress=False)
    with rasterio.open(tmp_path / "out" / "labels.zarr") as ds:
        labels = ds.read(1)
    rows = list(csv.DictReader(result.outputs["objects"].read_text().splitlines()))
    n_p, n_r, matched = _objects_and_matches(labels == 2, (ref == 2) & (labels != 255) & (labels != 0))
    assert n_p > 5 and matched < n_p and matched < n_r
    assert (int(rows[0]["objects"]), int(rows[0]["reference_objects"]), int(rows[0]["matched"])) == (n_p, n_r, matched)

    page = result.outputs["report"].read_text()
    assert page.count("<!-- geoseg:objects -->") == 1 and "http" not in page.split("<!-- geoseg:objects -->")[1]
    parser = _Tables()
    parser.feed(page)
    header, body = parser.rows[0], parser.rows[1:]
    assert header[:3] == ["region", "class", "objects"] and "F1" in header and "median m²" in header
    assert len(body) == len(rows)  # 12 grid cells: all listed
    column = {h: c for h, c in zip(header, ["region", "class_name", "objects", "reference_objects", "matched",
                                            "precision", "recall", "f1", "density_per_ha", "size_mean_m2",
                                            "size_p10_m2", "size_p25_m2", "size_p50_m2", "size_p75_m2",
                                            "size_p90_m2"])}
    for cells, want in zip(body, rows):
        assert cells[0] == ("whole scene" if want["region"] == "ALL" else want["region"])
        assert cells[1] == want["class_name"]
        for h, cell in list(zip(header, cells))[2:]:
            v = float(want[column[h]]) if want[column[h]] else float("nan")
            if np.isnan(v):
                assert cell == ""
            else:
                assert float(cell.replace(",", "")) == pytest.approx(v, rel=1e-3, abs=5e-4), (h, cell, v)
