"""Accuracy assessment: every figure equals scikit-learn's on the pixels of its region.

The pixel-level truth in these tests is computed independently of geoseg (numpy slicing for
regions, the arrays themselves for labels and reference), then compared with what the
chunked, reprojecting Dask reduction reports.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from geoseg.accuracy.counting import ChunkCounts, count_pixels, merge_counts
from geoseg.accuracy.evaluate import METRIC_COLUMNS, Evaluation, evaluate
from geoseg.accuracy.metrics import confusion_metrics
from geoseg.accuracy.reference import SENTINEL
from geoseg.errors import ClassIdError, InputError, MissingFileError, NoCRSError, NoOverlapError
from geoseg.geo import GeoGrid
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL, ClassInfo, cluster_legend
from tests.fixtures import CRS_UTM, TRANSFORM, random_blocks, write_raster, write_regions, write_store

ORIGIN = (500000.0, 5100000.0)  # the origin and pixel size of tests.fixtures.TRANSFORM
PX = 10.0


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def rect_region_masks(shape: tuple[int, int], rects: list, ids: list) -> dict:
    """Pixels of each region by slicing: every rectangle of an id, overlapping others or not
    (a region counts all its pixels)."""
    out: dict = {}
    for (r0, c0, r1, c1), rid in zip(rects, ids):
        m = np.zeros(shape, bool)
        m[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
        out[rid] = out[rid] | m if rid in out else m
    return out


def grid_region_masks(shape: tuple[int, int], cell_m: int) -> dict:
    """Pixel → grid cell from integer pixel-centre offsets (independent of geoseg's float maths)."""
    h, w = shape
    n_cols = -(-w * int(PX) // cell_m)
    rows = (np.arange(h) * int(PX) + int(PX) // 2) // cell_m
    cols = (np.arange(w) * int(PX) + int(PX) // 2) // cell_m
    cell = rows[:, None] * n_cols + cols[None, :]
    return {int(c): cell == c for c in np.unique(cell)}


def metric_rows(ev: Evaluation, region) -> tuple[pd.Series, pd.DataFrame]:
    m = ev.metrics()
    rows = m[m["region_id"].map(lambda v: type(v) is type(region) and v == region)]
    return rows[rows["kind"] == "region"].iloc[0], rows[rows["kind"] == "class"].set_index("class_id")


def assert_matches_sklearn(ev: Evaluation, region, mask: np.ndarray, labels: np.ndarray, ref: np.ndarray,
                           ref_valid: np.ndarray, mapping: dict | None = None) -> None:  # fmt: skip
    """Every figure of ``region`` equals scikit-learn's on the pixels of ``mask``."""
    mapping = ev.mapping if mapping is None else mapping
    lab_ok = labels != NODATA_LABEL
    valid = mask & lab_ok & ref_valid
    y_true = ref[valid].astype(np.int64)
    lut = {int(k): int(v) for k, v in mapping.items()}
    y_pred = np.array([lut.get(int(v), -1) for v in labels[valid]], dtype=np.int64)
    classes = [int(c) for c in ev.class_ids]
    summ, cls = metric_rows(ev, region)

    # exclusions
    assert int(summ["nodata_label_px"]) == int((mask & ~lab_ok).sum())
    assert int(summ["nodata_reference_px"]) == int((mask & ~ref_valid).sum())
    assert int(summ["excluded_px"]) == int((mask & ~(lab_ok & ref_valid)).sum())
    assert int(summ["valid_px"]) == y_true.size
    assert int(summ["unassigned_px"]) == int((y_pred == -1).sum())

    # confusion matrix over the classes (the unassigned column is the rest of each row)
    conf = ev.confusion(region)
    expected = confusion_matrix(y_true, y_pred, labels=classes) if y_true.size else np.zeros((len(classes),) * 2, int)
    np.testing.assert_array_equal(conf[classes].to_numpy(), expected)
    if "unassigned" in conf:
        assert conf["unassigned"].sum() == (y_pred == -1).sum()

    assert list(cls.index) == classes
    np.testing.assert_array_equal(cls["support_px"].to_numpy(int), [(y_true == c).sum() for c in classes])
    pixel_m2 = abs(ev.grid.transform.a * ev.grid.transform.e)
    np.testing.assert_allclose(cls["area_m2"].to_numpy(float), cls["support_px"].to_numpy(float) * pixel_m2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if y_true.size == 0:
            for col in ("iou", "precision", "recall", "f1", "miou", "overall_accuracy", "kappa"):
                assert np.isnan(summ[col]) if col in summ else True
            assert cls[["iou", "precision", "recall", "f1"]].isna().all().all()
            return
        present = sorted(set(y_true.tolist()) | (set(y_pred.tolist()) - {-1}))
        kw = dict(labels=classes, average=None)
        iou_sk = jaccard_score(y_true, y_pred, zero_division=0, **kw)
        iou = cls["iou"].to_numpy(float)
        absent = np.isin(classes, present, invert=True)
        assert np.isnan(iou[absent]).all() and (iou_sk[absent] == 0).all()
        np.testing.assert_allclose(iou[~absent], iou_sk[~absent], rtol=1e-12)
        for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
            np.testing.assert_allclose(cls[name].to_numpy(float), fn(y_true, y_pred, zero_division=np.nan, **kw),
                                       rtol=1e-12, equal_nan=True, err_msg=name)  # fmt: skip
        macro = dict(labels=present, average="macro")
        np.testing.assert_allclose(summ["miou"], jaccard_score(y_true, y_pred, zero_division=0, **macro), rtol=1e-12)
        assert summ["iou"] == summ["miou"]
        for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
            np.testing.assert_allclose(summ[name], fn(y_true, y_pred, zero_division=np.nan, **macro), rtol=1e-12,
                                       equal_nan=True, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(summ["overall_accuracy"], accuracy_score(y_true, y_pred), rtol=1e-12)
        np.testing.assert_allclose(summ["kappa"], cohen_kappa_score(y_true, y_pred), rtol=1e-9, atol=1e-12,
                                   equal_nan=True)  # fmt: skip


# ------------------------------------------------------------------------------------------
# pure pieces
# ------------------------------------------------------------------------------------------


def test_count_pixels_and_merge_on_different_axes() -> None:
    labels = np.array([[1, 2, 255], [2, 2, 1]], np.uint8)
    ref = np.array([[1, 2, 3], [0, 2, 2]], np.int32)
    slots = np.array([[0, 1, 1], [1, 2, 2]], np.int32)
    c = count_pixels(labels, ref, 0, slots, NODATA_LABEL)
    assert c.regions.tolist() == [0, 1, 2] and c.ref_values.tolist() == [1, 2] and c.label_values.tolist() == [1, 2]
    assert c.counts.sum() == 4 and c.counts[2].tolist() == [[0, 0], [1, 1]]
    assert c.excluded.tolist() == [[0, 0, 0], [1, 1, 2], [0, 0, 0]]
    other = ChunkCounts(np.array([2, 5]), np.array([7]), np.array([1]), np.array([[[3]], [[4]]]),
                        np.array([[1, 0, 1], [0, 0, 0]]))
    both = merge_counts([c, other])
    assert both.regions.tolist() == [0, 1, 2, 5]
    assert both.ref_values.tolist() == [1, 2, 7]
    assert both.counts.sum() == 11 and both.excluded[2].tolist() == [1, 0, 1]
    assert (c + other).counts.sum() == 11


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
    ref_scale=st.sampled_from([5, 3000, 10**6]),
    max_bins=st.sampled_from([8, 1 << 21]),
    ref_kind=st.sampled_from(["int32 + sentinel", "uint8 + nodata", "uint8, all valid"]),
)
def test_count_pixels_equals_brute_force(n: int, seed: int, ref_scale: int, max_bins: int, ref_kind: str) -> None:
    """Direct and renumbered (compacted) axes, wide and negative values, nodata anywhere; the
    reference in int32 with a sentinel, or in its own uint8 with a nodata value, or all valid."""
    import geoseg.accuracy.counting as ge

    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([0, 3, 7, 200, NODATA_LABEL], np.uint8), n)
    if ref_kind == "int32 + sentinel":
        ref = rng.integers(-ref_scale, ref_scale, n).astype(np.int32)
        valid = rng.random(n) < 0.8
        ref, invalid = np.where(valid, ref, SENTINEL).astype(np.int32), SENTINEL
    else:
        ref = rng.integers(0, 256, n).astype(np.uint8)
        invalid = int(rng.integers(0, 256)) if ref_kind == "uint8 + nodata" else None
        ref[rng.random(n) < 0.2] = invalid or 0
        valid = ref != invalid if invalid is not None else np.ones(n, bool)
    slots = rng.choice(np.array([0, 2, 900, 40000], np.int32), n)
    old, ge.MAX_BINS = ge.MAX_BINS, max_bins
    try:
        c = count_pixels(labels, ref, invalid, slots, NODATA_LABEL)
    finally:
        ge.MAX_BINS = old
    ok = valid & (labels != NODATA_LABEL)
    expected: dict = {}
    for g, r, lab in zip(slots[ok], ref[ok], labels[ok]):
        expected[(int(g), int(r), int(lab))] = expected.get((int(g), int(r), int(lab)), 0) + 1
    got = {(int(c.regions[i]), int(c.ref_values[j]), int(c.label_values[k])): int(v)
           for (i, j, k), v in np.ndenumerate(c.counts) if v}  # fmt: skip
    assert got == expected
    assert c.regions.tolist() == sorted(set(slots.tolist()))
    for i, g in enumerate(c.regions):
        m = slots == g
        assert c.excluded[i].tolist() == [int((m & (labels == NODATA_LABEL)).sum()), int((m & ~valid).sum()),
                                          int((m & ~ok).sum())]  # fmt: skip


def test_confusion_metrics_undefined_values_are_nan() -> None:
    m = np.zeros((2, 3, 4), np.int64)
    m[0, 0, 0] = 5  # one class in both: kappa undefined
    r = confusion_metrics(m)
    assert r["iou"][0].tolist()[0] == 1.0 and np.isnan(r["iou"][0][1:]).all()
    assert np.isnan(r["kappa"]).all()  # region 0: one class; region 1: no pixels
    assert np.isnan(r["overall_accuracy"][1]) and np.isnan(r["macro_iou"][1])


# ------------------------------------------------------------------------------------------
# property: any data, any chunking, any regions → scikit-learn's figures
# ------------------------------------------------------------------------------------------


@st.composite
def scenes(draw):
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    chunk = draw(st.integers(2, 30))
    rng = np.random.default_rng(seed)
    n_lab = draw(st.integers(1, 5))
    labels = rng.integers(1, n_lab + 1, (h, w)).astype(np.uint8)
    labels[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.1]))] = NODATA_LABEL
    agree = draw(st.sampled_from([0.0, 0.5, 0.9]))
    ref = np.where(rng.random((h, w)) < agree, labels, rng.integers(0, 7, (h, w))).astype(np.uint8)
    ref[labels == NODATA_LABEL] = rng.integers(0, 7, int((labels == NODATA_LABEL).sum()))
    kind = draw(st.sampled_from(["none", "grid", "rects"]))
    rects = []
    if kind == "rects":
        for _ in range(draw(st.integers(1, 4))):
            r0, c0 = draw(st.integers(-3, h)), draw(st.integers(-3, w))
            rects.append((r0, c0, r0 + draw(st.integers(1, h + 3)), c0 + draw(st.integers(1, w + 3))))
    cell_m = draw(st.sampled_from([20, 30, 50, 70])) if kind == "grid" else None
    ids = [draw(st.sampled_from([11, 22, 33])) for _ in rects]
    ref_nodata = draw(st.sampled_from([0, None]))  # None: class 0 is a class like any other
    return labels, ref, chunk, kind, rects, ids, cell_m, ref_nodata


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
@example(scene=(np.array([[1]], np.uint8), np.array([[2]], np.uint8), 2, "rects", [(0, -1, 1, 0), (0, 1, 1, 2)],
                [11, 11], None, 0))  # both rectangles only touch the 1-pixel raster: a region with no pixels
def test_every_figure_equals_sklearn(scene) -> None:
    labels, ref, chunk, kind, rects, ids, cell_m, ref_nodata = scene
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(scheduler="synchronous"):
        d = Path(tmp)
        store = write_store(d / "labels.zarr", labels, chunk)
        ref_path = write_raster(d / "ref.tif", ref, nodata=ref_nodata, transform=TRANSFORM)
        kwargs: dict = {}
        if kind == "rects":
            kwargs = dict(regions=write_regions(d / "regions.gpkg", rects, ids), region_field="zone", merge_duplicates=True)
        elif kind == "grid":
            kwargs = dict(grid_cell_m=cell_m)
        # a layer whose extent (all rectangles together) misses the raster is an error; one whose
        # extent overlaps it is evaluated, even when every rectangle just touches the raster's edge
        r0s, c0s, r1s, c1s = zip(*rects) if rects else ((0,), (0,), (1,), (1,))
        overlaps = kind != "rects" or (max(r1s) > 0 and max(c1s) > 0 and min(r0s) < labels.shape[0]
                                       and min(c0s) < labels.shape[1])  # fmt: skip
        if not overlaps:
            with pytest.raises(NoOverlapError, match="regions layer"):
                evaluate(store, ref_path, **kwargs)
            return
        ev = evaluate(store, ref_path, **kwargs)
    ref_valid = ref != ref_nodata if ref_nodata is not None else np.ones(ref.shape, bool)
    assert set(METRIC_COLUMNS) <= set(ev.metrics().columns)
    assert ev.region_ids[0] == "ALL"
    assert_matches_sklearn(ev, "ALL", np.ones(labels.shape, bool), labels, ref, ref_valid)
    if kind == "rects":
        masks = rect_region_masks(labels.shape, rects, ids)
        assert ev.region_ids[1:] == sorted(set(ids))
    elif kind == "grid":
        masks = grid_region_masks(labels.shape, cell_m)
        assert set(masks) <= set(ev.region_ids[1:])
    else:
        masks = {}
        assert ev.region_ids == ["ALL"]
    for rid in ev.region_ids[1:]:
        assert_matches_sklearn(ev, rid, masks.get(rid, np.zeros(labels.shape, bool)), labels, ref, ref_valid)
    # the legend's classes that never occur still get rows
    assert {c.id for c in LANDCOVER_CLASSES} <= set(ev.class_ids.tolist())


def test_chunk_size_does_not_change_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 5, (37, 41)).astype(np.uint8)
    ref = rng.integers(0, 5, (37, 41)).astype(np.uint8)
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=0, transform=TRANSFORM)
    results = []
    for chunk in (5, 16, 64):
        store = write_store(tmp_path / f"l{chunk}.zarr", labels, chunk)
        results.append(evaluate(store, ref_path, grid_cell_m=120).counts)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize(
    "dtype, nodata",
    [("uint8", 0), ("uint8", None), ("int16", -1), ("uint16", None)],
    ids=["uint8-nodata", "uint8-no-nodata", "int16-nodata", "uint16-no-nodata"],
)
def test_reference_covering_part_of_the_labels(tmp_path: Path, dtype: str, nodata) -> None:
    """A reference on the label grid that covers only part of it, whatever its type and nodata:
    pixels outside it, and its nodata pixels, are excluded as reference nodata; the rest counts."""
    rng = np.random.default_rng(7)
    labels = rng.integers(1, 5, (30, 40)).astype(np.uint8)
    inside = (slice(5, 30), slice(10, 40))  # the reference: rows 5.., cols 10..; 12 more columns to the right
    ref_data = rng.integers(-1 if nodata == -1 else 0, 5, (25, 42)).astype(dtype)
    ref_path = write_raster(tmp_path / "ref.tif", ref_data, nodata=nodata, transform=TRANSFORM * Affine.translation(10, 5))
    ref = np.zeros(labels.shape, np.int64)
    ref_valid = np.zeros(labels.shape, bool)
    ref[inside] = ref_data[:, :30]
    ref_valid[inside] = ref_data[:, :30] != nodata if nodata is not None else True
    for chunk in (7, 64):
        store = write_store(tmp_path / f"labels{chunk}.zarr", labels, chunk)
        ev = evaluate(store, ref_path)
        assert_matches_sklearn(ev, "ALL", np.ones(labels.shape, bool), labels, ref, ref_valid)
        assert int(ev.metrics().iloc[0]["nodata_reference_px"]) == int((~ref_valid).sum()) > 10 * 30


# ------------------------------------------------------------------------------------------
# CRS: a reference and regions in other CRSs give the same figures
# ------------------------------------------------------------------------------------------


def test_reference_and_regions_in_other_crs_are_reprojected(tmp_path: Path) -> None:
    """Reference in EPSG:3857 at a finer pixel, regions in EPSG:4326 vs. both on the label grid.

    The data are 16-pixel blocks, so nearest-neighbour resampling changes only pixels next to
    block edges; the regions' edges are 32-pixel multiples, exact after the round trip. The
    figures must agree closely, and the reprojected run must be far better than a reference
    that is 3 blocks off (what ignoring a CRS would look like).
    """
    shape = (160, 192)
    truth = random_blocks(shape, 16, 5, seed=3)
    labels = truth.copy()
    flip = random_blocks(shape, 16, 4, seed=4) == 1
    labels[flip] = (truth[flip] % 5) + 1  # a quarter of blocks wrong
    store = write_store(tmp_path / "labels.zarr", labels, chunk=48)
    native = write_raster(tmp_path / "ref_native.tif", truth, nodata=0, transform=TRANSFORM)

    from rasterio.warp import Resampling, calculate_default_transform, reproject

    dst_crs = CRS.from_epsg(3857)
    bounds = rasterio.transform.array_bounds(shape[0], shape[1], TRANSFORM)
    left, bottom, right, top = bounds[0], bounds[1], bounds[2], bounds[3]
    t3857, w3857, h3857 = calculate_default_transform(CRS_UTM, dst_crs, shape[1], shape[0], left, bottom, right, top,
                                                      resolution=6.3)  # fmt: skip
    other = np.zeros((h3857, w3857), np.uint8)
    reproject(truth, other, src_transform=TRANSFORM, src_crs=CRS_UTM, dst_transform=t3857, dst_crs=dst_crs,
              src_nodata=0, dst_nodata=0, resampling=Resampling.nearest)  # fmt: skip
    ref3857 = write_raster(tmp_path / "ref_3857.tif", other, crs="EPSG:3857", nodata=0, transform=t3857)

    rects = [(0, 0, 64, 96), (64, 0, 160, 96), (0, 96, 96, 192), (96, 96, 160, 192)]
    ids = [1, 2, 3, 4]
    reg_native = write_regions(tmp_path / "regions_utm.gpkg", rects, ids)
    reg_4326 = write_regions(tmp_path / "regions_4326.gpkg", rects, ids, to_crs=CRS.from_epsg(4326))
    assert gpd.read_file(reg_4326).crs.to_epsg() == 4326

    ev_native = evaluate(store, native, regions=reg_native, region_field="zone")
    ev_moved = evaluate(store, ref3857, regions=reg_4326, region_field="zone")
    assert_matches_sklearn(ev_native, "ALL", np.ones(shape, bool), labels, truth, truth != 0)

    m0 = ev_native.metrics().set_index(["region_id", "kind", "class_id"])
    m1 = ev_moved.metrics().set_index(["region_id", "kind", "class_id"])
    # Regions are exact: the same pixels in each region.
    t0 = ev_native.counts.sum(axis=(1, 2)) + ev_native.excluded[:, 2]
    t1 = ev_moved.counts.sum(axis=(1, 2)) + ev_moved.excluded[:, 2]
    np.testing.assert_array_equal(t0, t1)
    # Resampling moves few pixels: counts differ on < 3 % of pixels, figures by < 0.03.
    changed = np.abs(ev_native.counts[0] - ev_moved.counts[0]).sum() / 2
    assert changed < 0.03 * labels.size
    for col in ("iou", "precision", "recall", "f1", "miou", "overall_accuracy", "kappa"):
        a, b = m0[col].to_numpy(float), m1[col].to_numpy(float)
        ok = ~np.isnan(a) & ~np.isnan(b)
        assert np.abs(a[ok] - b[ok]).max() < 0.03, col
    # ... while a misregistered reference (shifted 3 blocks, same CRS) is clearly worse.
    shifted = write_raster(tmp_path / "ref_shift.tif", truth, nodata=0,
                           transform=TRANSFORM @ Affine.translation(48, 0))  # fmt: skip
    ev_bad = evaluate(store, shifted)
    miou = lambda ev: float(ev.metrics().iloc[0]["miou"])  # noqa: E731
    assert abs(miou(ev_moved) - miou(ev_native)) < 0.02
    assert miou(ev_bad) < miou(ev_native) - 0.2


@pytest.mark.parametrize("chunk", [7, 50, 200])
def test_windowed_warp_equals_warping_the_whole_raster(tmp_path: Path, chunk: int) -> None:
    """Each window reads only the source window it needs, yet gets exactly the pixels a warp
    of the whole reference onto the label grid gives (random data: every pixel counts)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from geoseg.accuracy.reference import SENTINEL, open_reference, reference_window

    shape = (90, 110)
    truth = np.random.default_rng(0).integers(1, 6, shape).astype(np.uint8)
    merc = CRS.from_epsg(3857)
    left, bottom, right, top = rasterio.transform.array_bounds(shape[0], shape[1], TRANSFORM)
    t2, w2, h2 = calculate_default_transform(CRS_UTM, merc, shape[1], shape[0], left, bottom, right, top, resolution=7.7)
    other = np.zeros((h2, w2), np.uint8)
    reproject(truth, other, src_transform=TRANSFORM, src_crs=CRS_UTM, dst_transform=t2, dst_crs=merc, src_nodata=0,
              dst_nodata=0)  # fmt: skip
    path = write_raster(tmp_path / "merc.tif", other, crs="EPSG:3857", nodata=0, transform=t2)
    whole = np.full(shape, SENTINEL, np.int32)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), whole, src_nodata=0, dst_transform=TRANSFORM, dst_crs=CRS_UTM,
                  dst_nodata=SENTINEL, resampling=Resampling.nearest)  # fmt: skip
    ref = open_reference(path)
    grid = GeoGrid.of(shape[0], shape[1], TRANSFORM, CRS_UTM).tiles(chunk)
    out = np.zeros(shape, np.int32)
    for w in grid.windows():
        out[w.slices] = reference_window(ref, grid.window_grid(w))[0]
    np.testing.assert_array_equal(out, whole)
    assert (out != SENTINEL).mean() > 0.95


@pytest.mark.parametrize("class_offset", [0, 1000], ids=["byte-classes", "wide-classes"])
def test_vector_reference_equals_raster_reference(tmp_path: Path, class_offset: int) -> None:
    """Class ids in 0..254 are burnt as bytes, wider ones as int32: the same counts either way."""
    from rasterio.features import shapes
    from shapely.geometry import shape as to_shape

    truth = random_blocks((40, 56), 8, 4, seed=7).astype(np.int16) + class_offset
    truth[:8, :8] = 0  # a hole: no reference polygon there
    labels = random_blocks((40, 56), 8, 4, seed=8)
    store = write_store(tmp_path / "labels.zarr", labels, chunk=16)
    raster = write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM)
    polys = [(to_shape(g), int(v)) for g, v in shapes(truth, mask=truth != 0, transform=TRANSFORM)]
    gdf = gpd.GeoDataFrame({"cls": [v for _, v in polys]}, geometry=[g for g, _ in polys], crs=CRS.from_epsg(32633))
    vector = tmp_path / "ref.gpkg"
    gdf.to_crs(4326).to_file(vector)
    a = evaluate(store, raster, grid_cell_m=160)
    b = evaluate(store, vector, reference_field="cls", grid_cell_m=160)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.excluded, b.excluded)
    with pytest.raises(InputError, match="reference_field"):
        evaluate(store, vector)


# ------------------------------------------------------------------------------------------
# class mappings
# ------------------------------------------------------------------------------------------


def test_hungarian_recovers_a_permutation(tmp_path: Path) -> None:
    truth = random_blocks((48, 64), 8, 5, seed=11)
    perm = {1: 3, 2: 0, 3: 4, 4: 1, 5: 2}  # reference class → cluster id
    clusters = np.vectorize(perm.get)(truth).astype(np.uint8)
    noise = np.random.default_rng(0).random(truth.shape) < 0.05
    clusters[noise] = (clusters[noise] + 1) % 5
    store = write_store(tmp_path / "k.zarr", clusters, chunk=20, legend=cluster_legend(5))
    ref = write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM)
    ev = evaluate(store, ref, mapping="hungarian", class_names={1: "one", 2: "two"})
    assert ev.mapping == {v: k for k, v in perm.items()}
    assert ev.class_names[1] == "one" and ev.class_names[5] == "class 5"
    assert_matches_sklearn(ev, "ALL", np.ones(truth.shape, bool), clusters, truth, truth != 0)
    # the same figures as the un-permuted labels with identity mapping
    plain = np.vectorize({v: k for k, v in perm.items()}.get)(clusters).astype(np.uint8)
    ev_id = evaluate(write_store(tmp_path / "p.zarr", plain, chunk=20), ref)
    s1, s2 = (e.summary().set_index("class_id") for e in (ev, ev_id))
    np.testing.assert_allclose(s1["iou"].to_numpy(float), s2.loc[s1.index, "iou"].to_numpy(float))
    assert ev.mapping_table()["class_id"].notna().all()
    # the identity mapping would score cluster 3 as class 3: refused, by the library and by the CLI
    with pytest.raises(ClassIdError, match="k-means clusters"):
        evaluate(store, ref)
    with pytest.raises(ClassIdError, match="k-means clusters"):
        evaluate([store, write_store(tmp_path / "k2.zarr", clusters, chunk=20, legend=cluster_legend(5))], ref)
    from geoseg.cli import main

    assert main(["evaluate", str(store), str(ref), "--out", str(tmp_path / "ev"), "-q"]) == 2
    assert not (tmp_path / "ev" / "metrics.csv").exists()


def test_many_to_one_and_unassigned_clusters(tmp_path: Path) -> None:
    truth = random_blocks((40, 40), 5, 3, seed=5)
    # six clusters: each class split in two halves of the image
    left = np.zeros(truth.shape, bool)
    left[:, :20] = True
    clusters = ((truth - 1) * 2 + left).astype(np.uint8)
    store = write_store(tmp_path / "k.zarr", clusters, chunk=16, legend=cluster_legend(6))
    ref = write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM)
    mo = evaluate(store, ref, mapping="many-to-one")
    assert mo.mapping == {0: 1, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3}
    assert mo.metrics().iloc[0]["miou"] == 1.0
    hu = evaluate(store, ref, mapping="hungarian")
    assert len(hu.mapping) == 3 and len(set(hu.mapping.values())) == 3  # one cluster per class
    summ = hu.metrics().iloc[0]
    assert summ["unassigned_px"] > 0 and summ["miou"] < 1
    assert "unassigned" in hu.confusion().columns
    assert_matches_sklearn(hu, "ALL", np.ones(truth.shape, bool), clusters, truth, truth != 0)
    raw = hu.confusion(mapped=False)
    assert raw.shape == (3, 6) and raw.to_numpy().sum() == truth.size
    given = evaluate(store, ref, mapping={0: 1, 1: 1})
    assert_matches_sklearn(given, "ALL", np.ones(truth.shape, bool), clusters, truth, truth != 0)
    with pytest.raises(InputError, match="unknown class mapping"):
        evaluate(store, ref, mapping="best")


def test_hungarian_leaves_a_surplus_cluster_unassigned_not_named_after_an_absent_class(tmp_path: Path) -> None:
    """The reference's legend names classes the scene does not hold (water, no pixel): a surplus
    cluster has no evidence for them (no matched pixel, counted by numpy) and stays unassigned,
    published under its own name instead of as water."""
    from geoseg.io.labelstore import read_label_info
    from geoseg.run.workflow import apply_evaluation_legend

    truth = random_blocks((40, 40), 5, 3, seed=5)  # classes 1..3
    left = np.zeros(truth.shape, bool)
    left[:, :20] = True
    clusters = ((truth - 1) * 2 + left).astype(np.uint8)  # six clusters, each class split in two
    store = write_store(tmp_path / "k.zarr", clusters, chunk=16, legend=cluster_legend(6))
    ref = write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM)
    with rasterio.open(ref, "r+") as ds:  # the legend, as the Slovenia reference's tags give it
        ds.update_tags(classes="1 forest,2 grassland,3 cropland,4 water,5 wetlands,6 tundra")
    assert not np.isin(truth, [4, 5, 6]).any()
    hu = evaluate(store, ref, mapping="hungarian")
    assert set(hu.mapping.values()) == {1, 2, 3} and len(hu.mapping) == 3
    apply_evaluation_legend(store, hu)
    names = {c.name for c in read_label_info(store).legend}
    assert not names & {"water", "wetlands", "tundra"}
    assert sum(n.startswith("cluster_") for n in names) == 3


def test_unassigned_clusters_without_free_ids_keep_the_clusters_published(tmp_path: Path) -> None:
    """A legend reaching class 253 leaves one free id below nodata for three unassigned clusters: the
    published labels keep the cluster ids (read back with rasterio) instead of the run failing after
    every stage, and the evaluation says why."""
    from geoseg.run.workflow import apply_evaluation_legend

    truth = random_blocks((40, 40), 5, 3, seed=5)  # classes 1..3
    left = np.zeros(truth.shape, bool)
    left[:, :20] = True
    clusters = ((truth - 1) * 2 + left).astype(np.uint8)  # six clusters: three left unassigned
    store = write_store(tmp_path / "k.zarr", clusters, chunk=16, legend=cluster_legend(6))
    ref = write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM)
    with rasterio.open(ref, "r+") as ds:
        ds.update_tags(classes="1 forest,2 grassland,3 cropland,253 unclassified")
    hu = evaluate(store, ref, mapping="hungarian")
    assert len(hu.mapping) == 3 and any("no free id above class 253" in n for n in hu.notes)
    apply_evaluation_legend(store, hu)
    with rasterio.open(store) as ds:
        np.testing.assert_array_equal(ds.read(1), clusters)
    assert (hu.mapping_table()["raster_value"] == hu.mapping_table()["label_id"]).all()


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_inputs_that_cannot_be_evaluated(tmp_path: Path) -> None:
    labels = random_blocks((20, 20), 5, 3, seed=1)
    store = write_store(tmp_path / "l.zarr", labels, chunk=10)
    no_crs = write_raster(tmp_path / "nocrs.tif", labels, crs=None, nodata=0, transform=TRANSFORM)
    with pytest.raises(NoCRSError):
        evaluate(store, no_crs)
    far = write_raster(tmp_path / "far.tif", labels, nodata=0, transform=Affine(10, 0, 100000, 0, -10, 1000000))
    with pytest.raises(NoOverlapError, match="reference"):
        evaluate(store, far)
    ok = write_raster(tmp_path / "ok.tif", labels, nodata=0, transform=TRANSFORM)
    far_regions = write_regions(tmp_path / "far.gpkg", [(0, 0, 5, 5)], [1], transform=Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(NoOverlapError, match="regions layer"):
        evaluate(store, ok, regions=far_regions)
    regions = write_regions(tmp_path / "r.gpkg", [(0, 0, 5, 5)], [1])
    with pytest.raises(InputError, match="no field"):
        evaluate(store, ok, regions=regions, region_field="nope")
    with pytest.raises(InputError, match="not both"):
        evaluate(store, ok, regions=regions, grid_cell_m=100)
    floats = write_raster(tmp_path / "f.tif", labels.astype("float32") + 0.5, transform=TRANSFORM)
    with pytest.raises(ClassIdError):
        evaluate(store, floats)
    with pytest.raises(MissingFileError):
        evaluate(store, tmp_path / "missing.tif")
    text = tmp_path / "x.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="neither a raster nor a vector"):
        evaluate(store, text)
    from rasterio.warp import transform as warp_transform

    (lon,), (lat,) = warp_transform(CRS_UTM, CRS.from_epsg(4326), [ORIGIN[0]], [ORIGIN[1]])
    geo = write_store(tmp_path / "geo.zarr", labels, chunk=10, transform=Affine(1e-4, 0, lon, 0, -1e-4, lat),
                      crs=CRS.from_epsg(4326))  # fmt: skip
    with pytest.raises(InputError, match="projected CRS"):
        evaluate(geo, ok, grid_cell_m=100)


def test_feature_ids_are_the_default_region_ids(tmp_path: Path) -> None:
    labels = random_blocks((20, 30), 5, 3, seed=2)
    store = write_store(tmp_path / "l.zarr", labels, chunk=8)
    ref = write_raster(tmp_path / "ref.tif", labels, nodata=0, transform=TRANSFORM)
    regions = write_regions(tmp_path / "r.gpkg", [(0, 0, 10, 10), (10, 10, 20, 30)], ["a", "b"])
    ev = evaluate(store, ref, regions=regions)
    assert ev.region_ids == ["ALL", 1, 2]  # GeoPackage FIDs
    ev = evaluate(store, ref, regions=regions, region_field="zone")
    assert ev.region_ids == ["ALL", "a", "b"]
    assert ev.metrics().query("kind == 'region'")["miou"].tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------
# distributed
# ------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_on_a_distributed_cluster_equals_local(tmp_path: Path, dask_client) -> None:
    labels = random_blocks((60, 70), 7, 4, seed=9)
    ref = random_blocks((60, 70), 9, 4, seed=10)
    store = write_store(tmp_path / "l.zarr", labels, chunk=16)
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=0, transform=TRANSFORM)
    regions = write_regions(tmp_path / "r.gpkg", [(0, 0, 30, 70), (30, 0, 60, 35)], [1, 2])
    a = evaluate(store, ref_path, regions=regions, region_field="zone", client=dask_client)
    b = evaluate(store, ref_path, regions=regions, region_field="zone")
    np.testing.assert_array_equal(a.counts, b.counts)
    pd.testing.assert_frame_equal(a.metrics(), b.metrics())


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------


def _real_label_store(folder: Path, values: np.ndarray, transform: Affine, crs: CRS, legend) -> Path:
    labels = np.where(values == 0, NODATA_LABEL, values).astype(np.uint8)
    return write_store(folder / "labels.zarr", labels, chunk=32, legend=legend, transform=transform, crs=crs)


def test_real_slovenia_reference_and_parcels(tmp_path: Path, realdata: Path) -> None:
    """The real land-use map against itself (IoU 1) and a perturbed copy, per RABA land-use
    type (``RABA_ID``: 7 ids over 88 parcels) and per parcel (feature ids)."""
    from rasterio.features import rasterize

    ref_path = realdata / "lulc_reference.tif"
    parcels = realdata / "raba_parcels.gpkg"
    with rasterio.open(ref_path) as src:
        ref = src.read(1)
        transform, crs = src.transform, src.crs
    legend = tuple(ClassInfo(i, f"class {i}", "#777777") for i in range(1, 11))
    store = _real_label_store(tmp_path / "same", ref, transform, crs, legend)
    gdf = gpd.read_file(parcels, fid_as_index=True)

    ev = evaluate(store, ref_path, regions=parcels, region_field="RABA_ID", merge_duplicates=True)
    assert ev.region_ids[1:] == sorted(gdf["RABA_ID"].unique().tolist())
    m = ev.metrics()
    summ = m[m["kind"] == "region"].set_index("region_id")
    assert summ.loc["ALL", "miou"] == 1.0 and summ.loc["ALL", "overall_accuracy"] == 1.0
    assert ev.class_names[2] == "forest" and ev.class_names[10] == "snow and ice"  # from the file's tag
    assert set(m.loc[m["kind"] == "class", "iou"].dropna().unique()) == {1.0}
    assert set(ev.class_ids.tolist()) == set(range(1, 11))  # legend classes absent from the data get rows
    assert summ.loc[1600, "valid_px"] == 0 and summ.loc[1600, "nodata_reference_px"] > 0  # LULC 0 = nodata
    assert (summ.drop(index=["ALL", 1600])["miou"] == 1.0).all()

    per_parcel = evaluate(store, ref_path, regions=parcels)  # feature ids: one region per parcel
    assert per_parcel.region_ids[1:] == gdf.index.tolist()
    p = per_parcel.metrics().query("kind == 'region'").set_index("region_id").iloc[1:]
    assert (p["valid_px"] > 0).sum() >= 40  # parcels inside the 1 km² scene have figures
    assert (p.loc[p["valid_px"] > 0, "miou"] == 1.0).all()

    # A perturbed copy: per-region figures equal scikit-learn's on the regions' pixels.
    rng = np.random.default_rng(42)
    noisy = ref.copy()
    flip = (rng.random(ref.shape) < 0.15) & (ref != 0)
    noisy[flip] = rng.choice([1, 2, 3, 4, 8], int(flip.sum()))
    store2 = _real_label_store(tmp_path / "noisy", noisy, transform, crs, legend)
    labels2 = np.where(noisy == 0, NODATA_LABEL, noisy).astype(np.uint8)
    ref64 = ref.astype(np.int64)
    # later features win where parcels overlap, as in geoseg
    owner = rasterize(list(zip(gdf.geometry, gdf.index)), out_shape=ref.shape, transform=transform, fill=0, dtype="int32")
    for field in ("RABA_ID", None):
        ev2 = evaluate(store2, ref_path, regions=parcels, region_field=field, merge_duplicates=field is not None)
        assert 0.3 < ev2.metrics().iloc[0]["miou"] < 1.0
        assert_matches_sklearn(ev2, "ALL", np.ones(ref.shape, bool), labels2, ref64, ref != 0)
        checked = 0
        for rid in ev2.region_ids[1:]:
            fids = gdf.index[gdf["RABA_ID"] == rid] if field else [rid]
            mask = np.isin(owner, fids)
            assert_matches_sklearn(ev2, rid, mask, labels2, ref64, ref != 0)
            checked += bool(mask.any())
        assert checked >= (6 if field else 40)
