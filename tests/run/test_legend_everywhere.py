"""One legend everywhere: after a k-means run with a reference, every output names and colours
the labels as the classes they were mapped to (the job's ``classes`` first), read back with
GDAL/rasterio, pyogrio and sqlite — not with geoseg."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import zarr
from scipy.ndimage import binary_erosion

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import LEGEND_CLASSES as CLASSES
from tests.fixtures import blocky_scene, write_raster

pytestmark = pytest.mark.integration



def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in rgb[:3]])


def test_kmeans_run_carries_the_mapped_legend_to_every_output(tmp_path: Path, dask_client) -> None:
    """One id everywhere: the raster value (labels.zarr and labels.tif), polygons.gpkg ``class_id``,
    metrics.csv ``class_id`` and the report's legend agree for every class of a k-means run (clusters
    matched to classes); the cluster ids stay in class_mapping.csv and ``labels.zarr/method_labels``."""
    scene, classes = blocky_scene(tmp_path)
    ref = write_raster(tmp_path / "ref.tif", (classes + 1).astype("uint8"), nodata=0)
    job = parse_job({
        "name": "legend", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "features": {"indices": ["ndvi"]}},
        "classes": CLASSES, "reference": {"path": str(ref)}, "export": {"cog": True},
    })  # fmt: skip
    result = run_job(job, client=dask_client, show_progress=False)
    out = tmp_path / "out"
    by_id = {c["id"]: c for c in CLASSES}
    metrics = pd.read_csv(out / "metrics.csv")
    scene_rows = metrics[(metrics["region_id"] == "ALL") & (metrics["kind"] == "class")]
    assert dict(zip(scene_rows["class_id"].astype(int), scene_rows["class_name"])) == {k: v["name"] for k, v in by_id.items()}
    mapping = pd.read_csv(out / "class_mapping.csv")
    assert sorted(mapping["label_id"]) == [0, 1, 2, 3]  # cluster ids stay visible
    assert set(mapping["label_name"]) == {f"cluster_{i}" for i in range(4)}
    assert (mapping["raster_value"] == mapping["class_id"]).all()  # every cluster matched: it carries its class id

    with rasterio.open(out / "labels.zarr") as ds:
        zarr_values = ds.read(1)
    with rasterio.open(out / "labels.tif") as ds:
        tif_values = ds.read(1)
        cmap = ds.colormap(1)
        transform = ds.transform
    with rasterio.open(out / "labels.zarr" / "method_labels") as ds:
        clusters = ds.read(1)
    np.testing.assert_array_equal(zarr_values, tif_values)
    lut = dict(zip(mapping["label_id"], mapping["raster_value"]))
    valid = clusters != 255
    np.testing.assert_array_equal(zarr_values[valid], np.vectorize(lut.get)(clusters[valid]))
    polys = pyogrio.read_dataframe(out / "polygons.gpkg", layer="polygons")
    html = (out / "report.html").read_text()
    for cid, c in by_id.items():  # a pixel deep inside a reference patch of each class
        inner = binary_erosion(classes + 1 == cid, iterations=4)
        r, col = np.argwhere(inner)[len(np.argwhere(inner)) // 2]
        assert zarr_values[r, col] == cid, f"the raster holds class id {cid} ({c['name']}), as metrics.csv"
        x, y = rasterio.transform.xy(transform, r, col)
        hit = polys[polys.contains(shapely.Point(x, y))]
        assert hit["class_id"].tolist() == [cid] and hit["class_name"].tolist() == [c["name"]]
        assert f'background: {c["color"]}"></span>{cid} {c["name"]}' in html  # the report's swatch
        assert _hex(cmap[cid]) == c["color"]

    attrs = zarr.open_group(str(out / "labels.zarr"), mode="r")["labels"].attrs
    zl = {d["id"]: (d["name"], d["color"]) for d in attrs["geoseg:classes"]}
    assert zl == {k: (v["name"], v["color"]) for k, v in by_id.items()}
    cats = [c.text or "" for c in ET.parse(str(out / "labels.tif") + ".aux.xml").getroot().iter("Category")]
    assert {k: cats[k] for k in by_id} == {k: v["name"] for k, v in by_id.items()}
    qml = ET.parse(out / "labels.qml").getroot()
    entries = {int(e.get("value")): (e.get("label"), e.get("color")) for e in qml.iter("paletteEntry")}
    assert entries == {k: (v["name"], v["color"]) for k, v in by_id.items()}
    with sqlite3.connect(out / "polygons.gpkg") as db:
        (style,), = db.execute("select styleQML from layer_styles").fetchall()
    for k, v in by_id.items():
        r, g, b = (int(v["color"][i : i + 2], 16) for i in (1, 3, 5))
        assert f'value="{k}" label="{v["name"]}"' in style and f"{r},{g},{b},255" in style
    with sqlite3.connect(out / "regions_metrics.gpkg") as db:
        rows = db.execute("select f_table_name, f_geometry_column, styleQML from layer_styles").fetchall()
        geom_col = db.execute("select column_name from gpkg_geometry_columns").fetchone()[0]
    assert rows[0][0] == "regions_metrics" and rows[0][1] == geom_col and 'type="graduatedSymbol"' in rows[0][2]
    assert result.metrics_summary.attrs["scored_share"] == pytest.approx(1 - 20 * 25 / classes.size)
    assert np.isfinite(result.metrics_summary.attrs["miou"])



def test_reference_codes_beyond_a_byte_leave_the_clusters_published_whole(tmp_path: Path, dask_client) -> None:
    """A reference coded like CORINE (111, 211, 311) and with a class 255: a cluster mapped to 311 has
    no byte to become, and one mapped to 255 would become nodata. The run ends, publishes the clusters
    as they are (every valid pixel still valid, named as clusters, not as classes) and says so;
    class_mapping.csv's raster_value is the cluster id each raster holds. Read back with rasterio/pyogrio."""
    scene, classes = blocky_scene(tmp_path)
    codes = np.array([111, 211, 255, 311], np.uint16)
    ref = write_raster(tmp_path / "ref.tif", codes[classes], nodata=0)
    job = parse_job({
        "name": "codes", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "features": {"indices": ["ndvi"]}},
        "reference": {"path": str(ref)}, "export": {"cog": True},
    })  # fmt: skip
    run_job(job, client=dask_client, show_progress=False)
    out = tmp_path / "out"
    mapping = pd.read_csv(out / "class_mapping.csv")
    assert sorted(mapping["class_id"]) == [111, 211, 255, 311]
    assert (mapping["raster_value"] == mapping["label_id"]).all()
    with rasterio.open(scene) as ds:
        scene_valid = ds.read_masks(1) > 0
    for path in (out / "labels.zarr", out / "labels.tif"):
        with rasterio.open(path) as ds:
            values = ds.read(1)
        assert ((values != 255) == scene_valid).all(), path  # no class became nodata
        assert set(np.unique(values[scene_valid])) == set(mapping["label_id"])
    assert not (out / "labels.zarr" / "method_labels").exists()  # nothing was remapped
    polys = pyogrio.read_dataframe(out / "polygons.gpkg", layer="polygons")
    assert set(polys["class_id"]) == set(mapping["label_id"])
    assert set(polys["class_name"]) == {f"cluster_{i}" for i in range(4)}
    assert polys.area.sum() == pytest.approx(scene_valid.sum() * 100)
    metrics = pd.read_csv(out / "metrics.csv")
    assert {111, 211, 255, 311} <= set(metrics["class_id"].dropna().astype(int))
    assert "do not fit the uint8 label raster" in (out / "report.html").read_text()


def test_kmeans_with_the_identity_mapping_is_refused_before_any_output(tmp_path: Path) -> None:
    """evaluate.mapping: identity on a k-means job would score cluster N as reference class N under its
    name: refused before the cluster starts, and the output folder holds nothing."""
    from geoseg.errors import JobSpecError

    scene, classes = blocky_scene(tmp_path)
    ref = write_raster(tmp_path / "ref.tif", (classes + 1).astype("uint8"), nodata=0)
    job = parse_job({
        "name": "identity", "inputs": [str(scene)], "output": str(tmp_path / "out"),
        "method": {"kind": "kmeans", "n_clusters": 4}, "reference": {"path": str(ref)},
        "evaluate": {"mapping": "identity"},
    })  # fmt: skip
    with pytest.raises(JobSpecError, match="identity would score kmeans"):
        run_job(job, show_progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

def test_kmeans_sample_drawn_vs_asked_is_recorded_and_warned(tmp_path: Path, dask_client) -> None:
    """A scene two thirds nodata: the sample drawn is about a third of the one asked; run.json says
    both and a warning names them."""
    import json
    import logging

    from tests.fixtures import SPECTRA, blocky_classes

    classes = blocky_classes(200, 200)
    img = SPECTRA[classes].transpose(2, 0, 1).astype("uint16")
    img[:, :, :133] = 0
    scene = write_raster(tmp_path / "s.tif", img, nodata=0, descriptions=("blue", "green", "red", "nir"))
    job = parse_job({"name": "sample", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
                     "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 20000}, "vectorize": {"enabled": False}})
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("geoseg.run")  # the sample is drawn in geoseg.run.labelling
    logger.addHandler(handler)
    try:
        result = run_job(job, client=dask_client, show_progress=False)
    finally:
        logger.removeHandler(handler)
    got = result.extra["kmeans_sample"]
    valid = int((img[0] != 0).sum())
    assert got["asked"] == 20000 and got["drawn"] == pytest.approx(20000 * valid / img[0].size, rel=0.15)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["kmeans_sample"] == got
    assert any(f"{got['drawn']} of the 20000 pixels asked" in r.getMessage() for r in records)
