"""Change reports between periods and scheduled monitoring of new scenes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.accuracy.change import CHANGE_NODATA, compare_periods
from geoseg.geo import GeoGrid
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import LANDCOVER_CLASSES
from geoseg.run.jobspec import parse_job
from geoseg.run.monitor import run_monitor


def _store(path, labels, chunk=40):
    grid = GeoGrid.of(*labels.shape, Affine(10, 0, 500000, 0, -10, 5100000), CRS.from_epsg(32633)).tiles(chunk)
    w = LabelStoreWriter.create(path, grid, LANDCOVER_CLASSES)
    for win in grid.windows():
        w.write(win, labels[win.slices])
    return w.finalize()


def test_transitions_and_change_map_are_exact(tmp_path):
    rng = np.random.default_rng(1)
    before = rng.integers(1, 5, (90, 110)).astype(np.uint8)
    after = before.copy()
    after[10:30, 20:50] = 3
    after[0, 0] = 255
    a, b = _store(tmp_path / "a.zarr", before), _store(tmp_path / "b.zarr", after)
    report = compare_periods(a, b, tmp_path / "change")
    valid = after != 255
    truth_changed = int(((before != after) & valid).sum())
    assert report.changed_area_m2() == truth_changed * 100.0
    m = report.matrix()
    for i in range(1, 5):
        for j in range(1, 5):
            assert m.loc[i, j] == int(((before == i) & (after == j) & valid).sum())
    with rasterio.open(tmp_path / "change" / "change.zarr") as ds:
        code = ds.read(1)
        assert ds.crs.to_epsg() == 32633
    assert code[0, 0] == CHANGE_NODATA
    changed = (before != after) & valid
    np.testing.assert_array_equal(code[changed], before[changed].astype(np.uint16) * 256 + after[changed])
    assert (code[~changed & valid] == 0).all()
    summary = json.loads((tmp_path / "change" / "change-summary.json").read_text())
    assert summary["changed_area_m2"] == truth_changed * 100.0


def test_the_change_map_names_its_codes_not_the_classes(tmp_path):
    """change.zarr holds before*256+after: its CF flags (read with zarr) and change.qml (read as XML)
    name every code it holds (read with rasterio) as a transition, 0 as unchanged; the periods' class
    legend, which decodes the codes, stays in geoseg:classes."""
    import xml.etree.ElementTree as ET

    import zarr

    before = np.kron(np.array([[1, 2], [3, 4]]), np.ones((30, 30), int)).astype(np.uint8)
    after = before.copy()
    after[:10, :10] = 2  # cropland -> forest
    after[40:50, 40:50] = 1  # grassland -> cropland
    report = compare_periods(_store(tmp_path / "a.zarr", before), _store(tmp_path / "b.zarr", after), tmp_path / "c")
    with rasterio.open(tmp_path / "c" / "change.zarr") as ds:
        held = set(np.unique(ds.read(1)).tolist()) - {CHANGE_NODATA}
    assert held == {0, 1 * 256 + 2, 4 * 256 + 1}
    attrs = zarr.open_group(str(tmp_path / "c" / "change.zarr"), mode="r")["labels"].attrs
    names = {c.id: c.name for c in LANDCOVER_CLASSES}
    assert attrs["flag_values"] == [0, 258, 1025]
    assert attrs["flag_meanings"].split() == ["unchanged", f"{names[1]}_to_{names[2]}".replace(" ", "_"),
                                              f"{names[4]}_to_{names[1]}".replace(" ", "_")]
    assert [c["id"] for c in attrs["geoseg:classes"]] == [c.id for c in LANDCOVER_CLASSES]
    palette = {int(e.get("value")): e.get("label") for e in ET.parse(tmp_path / "c" / "change.qml").iter("paletteEntry")}
    assert palette == {0: "unchanged", 258: f"{names[1]} → {names[2]}", 1025: f"{names[4]} → {names[1]}"}
    assert report.changed_area_m2() == 200 * 100.0


def test_change_between_stores_that_name_their_values_differently_is_refused(tmp_path):
    """Classes before, k-means clusters after (same grid): cluster 2 is not class 2, so no transition is
    counted and nothing is written; the error names the ids."""
    from geoseg.errors import InputError
    from geoseg.legend import cluster_legend

    labels = np.kron(np.array([[1, 2], [3, 4]]), np.ones((30, 30), int)).astype(np.uint8)
    grid = GeoGrid.of(60, 60, Affine(10, 0, 500000, 0, -10, 5100000), CRS.from_epsg(32633)).tiles(40)
    w = LabelStoreWriter.create(tmp_path / "clusters.zarr", grid, cluster_legend(5))
    for win in grid.windows():
        w.write(win, (labels[win.slices] - 1).astype(np.uint8))
    clusters = w.finalize()
    with pytest.raises(InputError, match="1: cropland before, cluster_1 after"):
        compare_periods(_store(tmp_path / "a.zarr", labels), clusters, tmp_path / "c")
    assert not (tmp_path / "c" / "change.zarr").exists()

def test_change_tables_are_written_atomically(tmp_path, monkeypatch):
    """A failed rewrite of transitions.csv keeps the previous file and leaves no temporary behind
    (the temporary's name is unique, so two runs into one folder cannot collide either)."""
    import pandas as pd

    rng = np.random.default_rng(2)
    before = rng.integers(1, 5, (50, 60)).astype(np.uint8)
    a, b = _store(tmp_path / "a.zarr", before), _store(tmp_path / "b.zarr", np.roll(before, 3, axis=1))
    out = tmp_path / "change"
    compare_periods(a, b, out)
    previous = (out / "transitions.csv").read_bytes()
    assert pd.read_csv(out / "transitions.csv")["pixels"].sum() > 0
    written = []

    def half_then_fail(self, path, *args, **kwargs):
        written.append(path)
        open(path, "w").write("region_id,from")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        compare_periods(a, b, out)
    assert (out / "transitions.csv").read_bytes() == previous
    assert written and all(not Path(p).exists() for p in written)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_transitions_per_region_with_nodata_in_both_periods(tmp_path):
    """Every region's transition matrix equals a count on its pixels; nodata in either period is
    left out; where regions overlap, the later feature owns the pixel."""
    import geopandas as gpd
    from shapely import box

    rng = np.random.default_rng(3)
    shape = (70, 90)
    before = np.kron(rng.integers(1, 5, (7, 9)), np.ones((10, 10), int)).astype(np.uint8)  # blocky
    after = before.copy()
    flip = rng.random(shape) < 0.3
    after[flip] = rng.integers(1, 6, int(flip.sum()))
    before[rng.random(shape) < 0.05] = 255
    after[rng.random(shape) < 0.05] = 255
    a, b = _store(tmp_path / "a.zarr", before, chunk=32), _store(tmp_path / "b.zarr", after, chunk=32)
    rects = {"north": (0, 0, 40, 90), "corner": (30, 60, 70, 90)}  # rows/cols; "corner" overlaps "north"
    geoms = [box(500000 + c0 * 10, 5100000 - r1 * 10, 500000 + c1 * 10, 5100000 - r0 * 10) for r0, c0, r1, c1 in rects.values()]
    gpd.GeoDataFrame({"zone": list(rects)}, geometry=geoms, crs=32633).to_file(tmp_path / "zones.gpkg")
    report = compare_periods(a, b, regions=tmp_path / "zones.gpkg", region_field="zone")

    owner = np.full(shape, "", dtype=object)
    for name, (r0, c0, r1, c1) in rects.items():
        owner[r0:r1, c0:c1] = name
    valid = (before != 255) & (after != 255)
    for region, mask in (("ALL", np.ones(shape, bool)), ("north", owner == "north"), ("corner", owner == "corner")):
        m = report.matrix(region)
        expected = {(i, j): int((mask & valid & (before == i) & (after == j)).sum()) for i in range(1, 6) for j in range(1, 6)}
        got = {(i, j): int(m.loc[i, j]) if i in m.index and j in m.columns else 0 for i, j in expected}
        assert got == expected, region
    assert report.total_area_m2() == valid.sum() * 100.0


@pytest.mark.integration
def test_monitoring_two_periods_finds_planted_changes(tmp_path, dask_client):
    """Second scene = first with a water patch pasted over forest; the report must find it (within 2 %)."""
    from geoseg.samples.synthetic import make_scene

    files = make_scene("landcover", tmp_path / "gen", width=512, height=512, seed=3)
    with rasterio.open(files.image) as ds:
        img, profile = ds.read(), ds.profile
        descriptions = ds.descriptions
    ref = rasterio.open(files.reference).read(1)
    # find a forest area and a water area of 24x24 px
    def find(cls):
        for r in range(0, 488, 4):
            for c in range(0, 488, 4):
                if (ref[r:r + 24, c:c + 24] == cls).all():
                    return r, c
        pytest.skip(f"no 24x24 block of class {cls} in the generated scene")
    forest = next(c.id for c in LANDCOVER_CLASSES if c.name == "forest")
    water = next(c.id for c in LANDCOVER_CLASSES if c.name == "water")
    (fr, fc), (wr, wc) = find(forest), find(water)
    img2 = img.copy()
    img2[:, fr:fr + 24, fc:fc + 24] = img[:, wr:wr + 24, wc:wc + 24]
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name, data in (("S2_2024-05-01.tif", img), ("S2_2024-06-01.tif", img2)):
        with rasterio.open(scenes / name, "w", **profile) as ds:
            ds.write(data)
            ds.descriptions = descriptions
    job = parse_job({
        "name": "mon", "inputs": [str(scenes / "S2_*.tif")], "output": str(tmp_path / "out"), "chunk_size": 256,
        "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 20000, "features": {"indices": ["ndvi", "ndwi"]}},
        "regions": {"path": str(files.regions), "field": "region_id"}, "vectorize": {"enabled": False},
    })
    summary = run_monitor(job, client=dask_client)
    assert summary.exit_code == 0 and len(summary.processed) == 2
    assert [c["to"] for c in summary.changes] == ["2024-06-01"]
    change = json.loads((tmp_path / "out" / "2024-06-01" / "change" / "change-summary.json").read_text())
    truth = 24 * 24 * 100.0  # m², every pasted pixel changed from forest to water
    assert abs(change["changed_area_m2"] - truth) <= 0.02 * truth
    # forest may span several clusters, but everything changed goes to the water cluster
    to_water = change["top_transitions"][0]["to_class"]
    into = sum(t["area_m2"] for t in change["top_transitions"] if t["to_class"] == to_water)
    assert into >= 0.98 * change["changed_area_m2"]
    # a second run has nothing new to do
    again = run_monitor(job, client=dask_client)
    assert again.processed == [] and len(again.skipped) == 2
    state = json.loads((tmp_path / "out" / "monitor-state.json").read_text())
    assert state["periods"] == ["2024-05-01", "2024-06-01"]
    shutil.rmtree(tmp_path / "gen")


def _cluster_store(path, labels, model: str | None):
    """A k-means run's labels (unnamed clusters), saying which model numbered them unless ``model`` is None."""
    from geoseg.io.labelstore import KMEANS_MODEL_ATTR
    from geoseg.legend import cluster_legend

    grid = GeoGrid.of(*labels.shape, Affine(10, 0, 500000, 0, -10, 5100000), CRS.from_epsg(32633)).tiles(40)
    w = LabelStoreWriter.create(path, grid, cluster_legend(5), attrs={KMEANS_MODEL_ATTR: model} if model else None)
    for win in grid.windows():
        w.write(win, labels[win.slices])
    return w.finalize()


def test_clusters_numbered_by_two_kmeans_models_are_not_compared(tmp_path, caplog):
    """Cluster 2 of one model is not cluster 2 of another: refused, nothing written; one model: compared;
    a store that does not say: compared, with a warning."""
    from geoseg.errors import InputError

    before = np.kron(np.array([[0, 1], [2, 3]]), np.ones((30, 30), int)).astype(np.uint8)
    after = before.copy()
    after[:10, :10] = 4
    with pytest.raises(InputError, match="different k-means models"):
        compare_periods(_cluster_store(tmp_path / "a.zarr", before, "m1"), _cluster_store(tmp_path / "b.zarr", after, "m2"),
                        tmp_path / "c")
    assert not (tmp_path / "c" / "change.zarr").exists()
    same = compare_periods(tmp_path / "a.zarr", _cluster_store(tmp_path / "b1.zarr", after, "m1"), tmp_path / "c1")
    assert same.changed_area_m2() == 100 * 100.0
    with caplog.at_level("WARNING", logger="geoseg.accuracy.changelegend"):
        unknown = compare_periods(tmp_path / "a.zarr", _cluster_store(tmp_path / "b0.zarr", after, None), tmp_path / "c0")
    assert unknown.changed_area_m2() == 100 * 100.0
    assert "one store does not say which model numbered them" in caplog.text


def test_monitoring_with_a_model_per_period_makes_no_change_report(tmp_path, dask_client):
    """reuse_kmeans_model: false fits each period's own clusters: both periods are labelled, and the summary
    says why there is no change report instead of counting a renumbering as change. With the default (one
    model) the model fitted on the first period and the one reloaded from its model.json are one model."""
    from geoseg.errors import InputError
    from geoseg.io.labelstore import read_label_info
    from geoseg.samples.synthetic import make_scene

    files = make_scene("landcover", tmp_path / "gen", width=128, height=128, seed=4)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    shutil.copy(files.image, scenes / "S2_2024-05-01.tif")
    with rasterio.open(files.image) as ds:  # the next month 5 % brighter: another fit, other centroids
        profile, data, descriptions = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(scenes / "S2_2024-06-01.tif", "w", **profile) as ds:
        ds.write((data * 1.05).astype(data.dtype))
        ds.descriptions = descriptions
    spec = {"name": "mon", "inputs": [str(scenes / "S2_*.tif")], "chunk_size": 64, "vectorize": {"enabled": False},
            "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 4000}, "export": {"cog": True}}
    own = run_monitor(parse_job({**spec, "output": str(tmp_path / "own"),
                                 "monitor": {"reuse_kmeans_model": False}}), client=dask_client)
    assert own.exit_code == 0 and len(own.processed) == 2
    (change,) = own.changes
    assert "different k-means models" in change["refused"] and "changed_area_m2" not in change
    assert not (tmp_path / "own" / "2024-06-01" / "change" / "change.zarr").exists()
    # labels.tif says it too (a tag GDAL shows), so the GeoTIFFs of the two periods are refused alike
    tifs = [tmp_path / "own" / p / "labels.tif" for p in ("2024-05-01", "2024-06-01")]
    with rasterio.open(tifs[0]) as ds:
        assert ds.tags()["GEOSEG_KMEANS_MODEL"] == read_label_info(tmp_path / "own" / "2024-05-01" / "labels.zarr"
                                                                  ).attrs["geoseg:kmeans_model"]
    with pytest.raises(InputError, match="different k-means models"):
        compare_periods(*tifs)
    shared = run_monitor(parse_job({**spec, "output": str(tmp_path / "shared")}), client=dask_client)
    (change,) = shared.changes
    assert "refused" not in change and change["changed_area_m2"] >= 0
    assert (tmp_path / "shared" / "2024-06-01" / "change" / "change.zarr").exists()
