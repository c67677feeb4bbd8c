"""Vector references and regions as users have them, checked against rasterio's own burner and scikit-learn.

The oracle burns the polygons over the whole scene with ``rasterio.features.rasterize`` (GDAL,
pixel-centre rule), independently of geoseg's chunked burner, then scores every pixel with
scikit-learn.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.features import rasterize
from shapely import Polygon, box
from sklearn.metrics import confusion_matrix, jaccard_score

from geoseg.accuracy.evaluate import evaluate
from geoseg.accuracy.report import write_outputs
from geoseg.errors import ClassIdError, InputError, NoOverlapError
from geoseg.legend import PALETTE, ClassInfo
from tests.fixtures import TRANSFORM, write_store
from tests.fixtures import random_blocks as blocky

UTM = CRS.from_epsg(32633)


def _classes(n: int) -> tuple[ClassInfo, ...]:
    """Labels that are class ids 0..n-1 (the identity mapping scores them; k-means clusters it refuses)."""
    return tuple(ClassInfo(i, f"class {i}", PALETTE[i]) for i in range(n))


def _layer(path: Path, geoms: list, crs: CRS = UTM, **cols) -> Path:
    gpd.GeoDataFrame(cols, geometry=geoms, crs=crs).to_file(path, driver="GPKG")
    return path


def _px_polygon(rng: np.random.Generator, h: int, w: int) -> Polygon:
    """A random convex-ish polygon in map coordinates, given in (fractional) pixel coordinates."""
    cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
    n = rng.integers(3, 7)
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.7, max(h, w) / 2, n)
    cols, rows = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
    xs, ys = TRANSFORM * (cols, rows)
    return Polygon(zip(xs, ys)).buffer(0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(3, 40), w=st.integers(3, 40), chunk=st.integers(2, 33),
       n_polys=st.integers(1, 6), background=st.sampled_from([0, 2]))  # fmt: skip
def test_presence_only_with_background_equals_sklearn_over_every_pixel(
    seed: int, h: int, w: int, chunk: int, n_polys: int, background: int
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
    polys = [p for p in (_px_polygon(rng, h, w) for _ in range(n_polys)) if not p.is_empty]
    if not polys:
        return
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(scheduler="synchronous"):
        d = Path(tmp)
        store = write_store(d / "l.zarr", labels, chunk, legend=_classes(3))
        layer = _layer(d / "buildings.gpkg", polys)
        truth = rasterize([(p, 1) for p in polys], out_shape=(h, w), transform=TRANSFORM, fill=background, dtype="uint8")
        scene_box = box(*(TRANSFORM * (0, h)), *(TRANSFORM * (w, 0)))
        if not shapely.union_all(polys).envelope.intersects(scene_box):
            with pytest.raises(NoOverlapError):
                evaluate(store, layer, reference_value=1, reference_background=background)
            return
        ev = evaluate(store, layer, reference_value=1, reference_background=background)
    classes = sorted({1, background} | set(np.unique(labels).tolist()))
    cm = confusion_matrix(truth.ravel(), labels.ravel(), labels=classes)
    got = ev.confusion("ALL")
    np.testing.assert_array_equal(got.loc[classes, classes].to_numpy(), cm)
    assert float(ev.scored_share()[0]) == 1.0
    m = ev.metrics().query("region_id == 'ALL' and kind == 'class'").set_index("class_id")
    present = sorted(set(np.unique(truth).tolist()) | set(np.unique(labels).tolist()))
    ious = jaccard_score(truth.ravel(), labels.ravel(), labels=present, average=None, zero_division=0)
    for c, iou in zip(present, ious):
        np.testing.assert_allclose(m.loc[c, "iou"], iou)


def test_without_background_the_scored_share_is_stated_everywhere(tmp_path: Path) -> None:
    """Footprints covering a small part: only that part is scored, and CLI lines, metrics.csv and
    report.html say which share, with a warning."""
    labels = blocky((40, 50), 5, 3, seed=4)
    store = write_store(tmp_path / "l.zarr", labels, 16, legend=_classes(4))
    polys = [box(*(TRANSFORM * (5, 12)), *(TRANSFORM * (15, 4))), box(*(TRANSFORM * (30, 35)), *(TRANSFORM * (44, 22)))]
    layer = _layer(tmp_path / "b.gpkg", polys)
    covered = rasterize([(p, 1) for p in polys], out_shape=labels.shape, transform=TRANSFORM, fill=0).astype(bool)
    ev = evaluate(store, layer, reference_value=1)
    share = covered.mean()
    assert 0 < share < 0.5
    assert float(ev.scored_share()[0]) == pytest.approx(share)
    lines = ev.coverage_lines()
    assert lines[0].startswith(f"scored: {100 * share:.1f} % of the scene")
    assert any(line.startswith("WARNING: only") and "background" in line for line in lines)
    written = write_outputs(ev, tmp_path / "out", preview=False)
    import pandas as pd

    metrics = pd.read_csv(written["metrics"])
    assert metrics.loc[0, "scored_share"] == pytest.approx(share)
    html = Path(written["report"]).read_text()
    assert f"{100 * share:.1f} %" in html and "WARNING: only" in html
    with_bg = evaluate(store, layer, reference_value=1, reference_background=0)
    assert float(with_bg.scored_share()[0]) == 1.0
    assert not any(line.startswith("WARNING") for line in with_bg.coverage_lines())


def test_text_class_field_through_class_names_or_a_values_map(tmp_path: Path) -> None:
    labels = blocky((30, 30), 10, 3, seed=5)
    store = write_store(tmp_path / "l.zarr", labels, 16, legend=_classes(4))
    cells = [box(*(TRANSFORM * (c, r + 10)), *(TRANSFORM * (c + 10, r))) for r in (0, 10, 20) for c in (0, 10, 20)]
    ints = np.array([labels[r + 5, c + 5] for r in (0, 10, 20) for c in (0, 10, 20)])
    names = {1: "Forest", 2: "water", 3: "built-up"}
    layer = _layer(tmp_path / "t.gpkg", cells, cls=[names[int(v)] for v in ints], code=ints.astype("int32"))
    by_id = evaluate(store, layer, reference_field="code")
    by_name = evaluate(store, layer, reference_field="cls", class_names={1: "forest", 2: "Water", 3: "built-up"})
    np.testing.assert_array_equal(by_id.counts, by_name.counts)
    assert by_name.class_names[1] == "forest"
    by_map = evaluate(store, layer, reference_field="cls", reference_values={"forest": 1, "WATER": 2, "built-up": 3})
    np.testing.assert_array_equal(by_id.counts, by_map.counts)
    assert by_map.class_names[2] == "water"  # named as the layer names it
    with pytest.raises(InputError, match="class names without an id: 'built-up'"):
        evaluate(store, layer, reference_field="cls", reference_values={"forest": 1, "water": 2})
    with pytest.raises(InputError, match="value: N"):
        evaluate(store, layer)


# ------------------------------------------------------------------------------------------
# regions
# ------------------------------------------------------------------------------------------


def _alone(geom, shape: tuple[int, int]) -> np.ndarray:
    return rasterize([(geom, 1)], out_shape=shape, transform=TRANSFORM, fill=0).astype(bool)


def test_overlapping_regions_each_count_all_their_pixels(tmp_path: Path) -> None:
    """A farm and its fields, and a buffer zone across both: each region's confusion matrix equals
    that of the region rasterised alone; ALL counts each pixel once."""
    shape = (48, 60)
    labels = blocky(shape, 6, 3, seed=1)
    ref = blocky(shape, 8, 3, seed=2)
    from tests.fixtures import write_raster

    ref_path = write_raster(tmp_path / "ref.tif", ref, transform=TRANSFORM)
    store = write_store(tmp_path / "l.zarr", labels, 16)
    px = lambda c0, r0, c1, r1: box(*(TRANSFORM * (c0, r1)), *(TRANSFORM * (c1, r0)))  # noqa: E731
    tri = Polygon(zip(*(TRANSFORM * (np.array([10.3, 55.2, 50.1]), np.array([35.7, 8.4, 45.9])))))
    geoms = [px(2, 2, 40, 40), px(4, 4, 20, 20), px(22, 4, 38, 30), tri]
    ids = ["farm", "field a", "field b", "buffer"]
    regions = _layer(tmp_path / "r.gpkg", geoms, name=ids)
    ev = evaluate(store, ref_path, regions=regions, region_field="name")
    assert ev.regions.n_groups >= 2
    for rid, g in zip(ids, geoms):
        mask = _alone(g, shape)
        cm = confusion_matrix(ref[mask], labels[mask], labels=ev.class_ids.tolist())
        got = ev.confusion(rid).loc[:, ev.class_ids.tolist()].to_numpy()
        np.testing.assert_array_equal(got, cm, err_msg=rid)
    np.testing.assert_array_equal(
        ev.confusion("ALL").to_numpy(), confusion_matrix(ref.ravel(), labels.ravel(), labels=ev.class_ids.tolist())
    )
    union = np.any([_alone(g, shape) for g in geoms], axis=0)
    assert ev.outside_regions_px == int((~union).sum())
    assert any("overlap" in n for n in ev.notes)


def test_bowtie_duplicates_and_empty_geometries(tmp_path: Path) -> None:
    shape = (40, 40)
    labels = blocky(shape, 5, 3, seed=3)
    from tests.fixtures import write_raster

    ref_path = write_raster(tmp_path / "ref.tif", labels, transform=TRANSFORM)
    store = write_store(tmp_path / "l.zarr", labels, 16)
    xs, ys = TRANSFORM * (np.array([3.0, 37.0, 37.0, 3.0]), np.array([3.0, 37.0, 3.0, 37.0]))
    bowtie = Polygon(zip(xs, ys))
    assert not bowtie.is_valid
    regions = _layer(tmp_path / "r.gpkg", [bowtie, box(*(TRANSFORM * (0, 10)), *(TRANSFORM * (10, 0))), Polygon()],
                     zone=[1, 2, 3])
    ev = evaluate(store, ref_path, regions=regions, region_field="zone")
    repaired = shapely.make_valid(bowtie)
    n = int(ev.metrics().query("region_id == 1 and kind == 'region'")["valid_px"].iloc[0])
    assert n == int(_alone(repaired, shape).sum())
    assert n == pytest.approx(repaired.area / 100, rel=0.05)  # its repaired area, in 10 m pixels
    assert any("repaired with make_valid" in x and "Self-intersection" in x for x in ev.notes)
    assert any("empty or null geometry" in x and "3" in x for x in ev.notes)
    assert int(ev.metrics().query("region_id == 3 and kind == 'region'")["valid_px"].iloc[0]) == 0
    from geoseg.accuracy.regions import open_regions

    with pytest.raises(InputError, match="Self-intersection"):
        open_regions(regions, "zone", ev.grid, repair_invalid=False)
    dup = _layer(tmp_path / "d.gpkg", [box(*(TRANSFORM * (0, 10)), *(TRANSFORM * (10, 0))),
                                       box(*(TRANSFORM * (20, 30)), *(TRANSFORM * (30, 20)))], zone=[7, 7])
    with pytest.raises(InputError, match="merge_duplicates"):
        evaluate(store, ref_path, regions=dup, region_field="zone")
    merged = evaluate(store, ref_path, regions=dup, region_field="zone", merge_duplicates=True)
    assert int(merged.metrics().query("region_id == 7 and kind == 'region'")["valid_px"].iloc[0]) == 200


def test_reprojection_is_named(tmp_path: Path) -> None:
    labels = blocky((20, 20), 5, 3, seed=3)
    store = write_store(tmp_path / "l.zarr", labels, 16)
    g = box(*(TRANSFORM * (0, 20)), *(TRANSFORM * (20, 0)))
    layer = _layer(tmp_path / "etrs.gpkg", [g], crs=UTM, cls=[1])
    gpd.read_file(layer).set_crs(25833, allow_override=True).to_file(tmp_path / "etrs89.gpkg")
    ev = evaluate(store, tmp_path / "etrs89.gpkg", reference_field="cls")
    line = next(n for n in ev.notes if n.startswith("reference"))
    assert "EPSG:25833" in line and "EPSG:32633" in line and "ETRS89 to WGS 84" in line


def test_cli_prints_the_scored_share_under_the_table(tmp_path: Path, capsys) -> None:
    from geoseg.cli import main

    labels = blocky((30, 30), 5, 3, seed=4)
    store = write_store(tmp_path / "l.zarr", labels, 16, legend=_classes(4))
    poly = box(*(TRANSFORM * (0, 10)), *(TRANSFORM * (10, 0)))  # 100 of 900 px
    layer = _layer(tmp_path / "b.gpkg", [poly])
    assert main(["evaluate", str(store), str(layer), "--reference-value", "1", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "scored: 11.1 % of the scene (100 of 900 px)" in out and "WARNING: only 11.1 %" in out
    assert main(["evaluate", str(store), str(layer), "--reference-value", "1", "--background", "0",
                 "--out", str(tmp_path / "o2")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "scored: 100 % of the scene (900 of 900 px)" in out and "WARNING" not in out


def test_merged_duplicates_reach_the_regions_layer(tmp_path: Path) -> None:
    from tests.fixtures import write_raster

    labels = blocky((30, 30), 5, 3, seed=3)
    ref_path = write_raster(tmp_path / "ref.tif", labels, transform=TRANSFORM)
    store = write_store(tmp_path / "l.zarr", labels, 16)
    dup = _layer(tmp_path / "d.gpkg", [box(*(TRANSFORM * (0, 10)), *(TRANSFORM * (10, 0))),
                                       box(*(TRANSFORM * (20, 30)), *(TRANSFORM * (30, 20)))], zone=[7, 7])
    ev = evaluate(store, ref_path, regions=dup, region_field="zone", merge_duplicates=True)
    written = write_outputs(ev, tmp_path / "out", regions_path=dup, preview=False)
    gdf = gpd.read_file(written["regions_metrics"])
    assert gdf["region_id"].tolist() == [7, 7] and gdf["valid_px"].tolist() == [200, 200]


def test_class_ids_stored_as_reals(tmp_path: Path) -> None:
    labels = blocky((20, 20), 10, 3, seed=5)
    store = write_store(tmp_path / "l.zarr", labels, 16, legend=_classes(4))
    cells = [box(*(TRANSFORM * (c, r + 10)), *(TRANSFORM * (c + 10, r))) for r in (0, 10) for c in (0, 10)]
    ints = np.array([labels[r + 5, c + 5] for r in (0, 10) for c in (0, 10)])
    layer = _layer(tmp_path / "f.gpkg", cells, code=ints.astype("int32"), real=ints.astype("float64"),
                   half=ints + 0.5)  # fmt: skip
    a = evaluate(store, layer, reference_field="code")
    b = evaluate(store, layer, reference_field="real")
    np.testing.assert_array_equal(a.counts, b.counts)
    with pytest.raises(ClassIdError, match=r"holds \d\.5"):
        evaluate(store, layer, reference_field="half")


def test_a_reference_layer_without_geometries_is_refused_in_one_line(tmp_path: Path) -> None:
    """GDAL gives such a layer (a GeoJSON whose only geometry has an unknown type) no extent: an InputError, not a
    TypeError from deep inside."""
    import json

    from geoseg.accuracy.reference import open_reference
    from tests.fixtures import geo_grid

    path = tmp_path / "ref.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"cls": 1}, "geometry": {"type": "Pint", "coordinates": [0, 0]}}]}))
    with pytest.raises(InputError, match="has no geometries"):
        open_reference(path, "cls", label_grid=geo_grid(300, 340))
