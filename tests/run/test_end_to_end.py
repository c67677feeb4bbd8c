"""End to end on generated scenes: the CLI as a user runs it, and the outputs checked against each other.

Small scenes (256-384 px) with 128 px chunks, so every output is stitched from several chunks
and a seam or counting error shows up as a mismatch with a whole-raster recomputation
(scipy connected components, scikit-learn's Jaccard).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import xarray as xr
from scipy import ndimage
from sklearn.metrics import jaccard_score

from geoseg.legend import LANDCOVER_CLASSES
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.synthetic import make_scene
from tests.fixtures import validate_stac_offline
from tests.run.jobs import landcover_job_dict

pytestmark = pytest.mark.integration

NODATA_LABEL = 255
#: The installed console script next to this interpreter (the venv's ``bin``).
GEOSEG = Path(sys.executable).with_name("geoseg")


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = [str(GEOSEG)] if GEOSEG.exists() else [sys.executable, "-m", "geoseg.cli"]
    env = {**os.environ, "COLUMNS": "200"}  # a wide console: the IoU table's cells do not wrap
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _labels(store: Path) -> np.ndarray:
    ds = xr.open_zarr(str(store), mask_and_scale=False)
    return np.asarray(ds["labels"].values)


def _read_band(path: Path) -> tuple[np.ndarray, float | None]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata


# ------------------------------------------------------------------------------------------
# a workflow run with several chunks
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landcover_run(tmp_path_factory, dask_client):
    """k-means on a 384 x 320 land-cover scene in 128 px chunks (3 x 3 chunks), vectorised and evaluated."""
    root = tmp_path_factory.mktemp("e2e")
    files = make_scene("landcover", root / "data", width=384, height=320, seed=5, block=128)
    job = parse_job(landcover_job_dict(files, root / "out") | {"name": "e2e-landcover", "export": {"cog": True}})
    result = run_job(job, client=dask_client, show_progress=False)
    return {"files": files, "out": root / "out", "result": result}


def test_run_is_stitched_from_several_chunks(landcover_run) -> None:
    record = json.loads((landcover_run["out"] / "run.json").read_text())
    assert record["outcome"] == "complete"
    assert record["chunks_total"] == 9
    labels = _labels(landcover_run["out"] / "labels.zarr")
    assert labels.shape == (320, 384)
    assert (labels == NODATA_LABEL).any() and (labels != NODATA_LABEL).any()  # the scene's nodata wedge


def test_polygon_areas_and_counts_equal_the_label_raster(landcover_run) -> None:
    """Per class: summed polygon area = pixels x pixel area; polygons = 4-connected components."""
    out = landcover_run["out"]
    labels = _labels(out / "labels.zarr")
    with rasterio.open(out / "labels.zarr") as ds:
        px_area = abs(ds.transform.a * ds.transform.e)
    gdf = gpd.read_file(out / "polygons.gpkg", layer="polygons")
    assert gdf.crs.to_epsg() == 32633
    assert shapely.is_valid(gdf.geometry.values).all()
    classes = sorted(int(c) for c in np.unique(labels) if c != NODATA_LABEL)
    assert sorted(gdf["class_id"].unique().tolist()) == classes and len(classes) == 6

    area = gdf.groupby("class_id")["area_m2"].sum()
    count = gdf.groupby("class_id").size()
    for c in classes:
        mask = labels == c
        _, n_components = ndimage.label(mask)  # default structure: 4-connectivity
        assert area.loc[c] == pytest.approx(mask.sum() * px_area, rel=1e-6), f"class {c} area"
        assert count.loc[c] == n_components, f"class {c}: {count.loc[c]} polygons, {n_components} components"
    assert len(gdf) == landcover_run["result"].extra["n_polygons"]
    np.testing.assert_allclose(gdf.geometry.area.to_numpy(), gdf["area_m2"].to_numpy(), rtol=1e-9)


def test_stac_item_validates_offline_and_odc_stac_reads_the_labels(landcover_run) -> None:
    import hashlib

    import odc.stac
    import pystac

    from geoseg.io.labelstore import open_labels, read_label_info

    out, outputs = landcover_run["out"], landcover_run["result"].outputs
    assert outputs["stac"] == out / "item.json"
    data = json.loads((out / "item.json").read_text())
    validate_stac_offline(data)
    assert {"labels", "cog", "polygons", "metrics", "report", "run"} <= set(data["assets"])
    for key, asset in data["assets"].items():
        if "file:checksum" in asset:  # every plain file as written (run.json, rewritten last, has none)
            digest = hashlib.sha256((out / asset["href"]).read_bytes()).hexdigest()
            assert asset["file:checksum"] == "1220" + digest, key
    legend = {c.id: c for c in read_label_info(out / "labels.zarr").legend}
    classes = {c["value"]: c for c in data["assets"]["labels"]["classification:classes"] if not c.get("nodata")}
    assert {k: (c["title"], "#" + c["color_hint"].lower()) for k, c in classes.items()} == {
        k: (c.name, c.color.lower()) for k, c in legend.items()}
    item = pystac.Item.from_file(str(out / "item.json"))
    loaded = odc.stac.load([item], bands=["labels", "cog"]).isel(time=0)
    expected = open_labels(out / "labels.zarr").values
    np.testing.assert_array_equal(loaded["labels"].values, expected)
    np.testing.assert_array_equal(loaded["cog"].values, expected)


def test_scene_iou_equals_sklearn_jaccard(landcover_run) -> None:
    out = landcover_run["out"]
    labels = _labels(out / "labels.zarr").astype(np.int64)
    ref, ref_nodata = _read_band(landcover_run["files"].reference)
    ref = ref.astype(np.int64)
    mapping = pd.read_csv(out / "class_mapping.csv")
    assert len(mapping) == 6 and mapping["class_id"].notna().all()  # hungarian: 6 clusters onto 6 classes
    assert mapping["class_id"].is_unique
    lut = np.full(256, -1, np.int64)
    lut[mapping["label_id"].to_numpy(int)] = mapping["class_id"].to_numpy(int)
    clusters = _labels(out / "labels.zarr" / "method_labels").astype(np.int64)  # the k-means clusters
    valid = (labels != NODATA_LABEL) & (ref != int(ref_nodata))
    np.testing.assert_array_equal(labels[clusters != NODATA_LABEL], lut[clusters[clusters != NODATA_LABEL]])
    y_true, y_pred = ref[valid], labels[valid]  # the published raster holds the class ids of metrics.csv

    m = pd.read_csv(out / "metrics.csv", dtype={"region_id": str})
    scene = m[(m["region_id"] == "ALL") & (m["kind"] == "class")].set_index("class_id")
    present = sorted(set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist()))
    expected = jaccard_score(y_true, y_pred, labels=present, average=None)
    np.testing.assert_allclose(scene.loc[present, "iou"].to_numpy(float), expected, rtol=1e-12, atol=0)
    top = m[(m["region_id"] == "ALL") & (m["kind"] == "region")].iloc[0]
    assert int(top["valid_px"]) == int(valid.sum())
    assert int(top["excluded_px"]) == int((~valid).sum()) > 0
    assert top["miou"] == pytest.approx(float(np.mean(expected)), rel=1e-12)


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------


def test_demo_cli_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _cli("demo", "--out", str(out), "--size", "256", "--workers", "1", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    assert "Per-class IoU" in stdout and "mean (mIoU)" in stdout
    for c in LANDCOVER_CLASSES:
        assert c.name in stdout, f"class {c.name!r} missing from the IoU table"
    output = out / "output"
    printed = dict(re.findall(r"^\s*(\w+): (\S+)$", stdout, flags=re.M))
    for name in ("labels", "polygons", "metrics", "report", "run"):
        assert name in printed, f"path of {name} not printed"
        assert Path(printed[name]).exists() and Path(printed[name]).parent == output.resolve()
    record = json.loads((output / "run.json").read_text())
    assert record["outcome"] == "complete"
    assert record["cluster"]["n_workers"] == 1
    assert (out / "demo-job.yaml").exists() and (out / "data" / "landcover_image.tif").exists()
    with rasterio.open(output / "labels.zarr") as ds:
        assert (ds.width, ds.height) == (256, 256)


@pytest.mark.parametrize("kind, epsg", [("landcover", 32633), ("cropweed", 32632)])
def test_synth_cli_writes_tiled_compressed_projected_geotiffs(tmp_path: Path, kind: str, epsg: int) -> None:
    out = tmp_path / "cli"
    proc = _cli("synth", kind, "--out", str(out), "--width", "200", "--height", "144", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    image, reference, regions = (out / f"{kind}_{n}" for n in ("image.tif", "reference.tif", "regions.gpkg"))
    for p in (image, reference, regions):
        assert str(p) in proc.stdout and p.exists()
    for p in (image, reference):
        with rasterio.open(p) as ds:
            assert (ds.width, ds.height) == (200, 144)
            assert ds.crs is not None and ds.crs.is_projected and ds.crs.to_epsg() == epsg
            assert ds.profile.get("tiled") is True
            by, bx = ds.block_shapes[0]
            assert by == bx and by % 16 == 0  # square internal tiles, not strips
            assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") in ("DEFLATE", "ZSTD", "LZW")
    assert gpd.read_file(regions).crs.to_epsg() == epsg
    # the CLI passes size and seed through: same bytes as the library call
    lib = make_scene(kind, tmp_path / "lib", width=200, height=144, seed=3)
    assert lib.image.read_bytes() == image.read_bytes()
    assert lib.reference.read_bytes() == reference.read_bytes()


def test_synth_cli_bad_size_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _cli("synth", "landcover", "--out", str(tmp_path), "--width", "0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("geoseg: error:") and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.tif"))
