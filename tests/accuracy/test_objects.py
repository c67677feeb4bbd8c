"""Objects: chunk-wise ids, counts and sizes equal scipy.ndimage.label on the whole raster; object F1."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from geoseg.accuracy.objects import FOUR, find_objects, instance_chunk
from geoseg.accuracy.objectstats import object_rows, overlap_pairs, run_objects_stage, score_objects
from geoseg.legend import ClassInfo
from tests.fixtures import chunk_grid, write_raster, write_store

#: The two classes of the object-stage stores: objects are class 2.
SOIL_WEED = (ClassInfo(1, "soil", "#000000"), ClassInfo(2, "weed", "#ff0000"))


def _chunked(arr, regions, chunk, classes, n_slots):
    grid = chunk_grid(*arr.shape, chunk)
    table = find_objects(lambda w: (arr[w.slices], regions[w.slices]), grid, classes, n_slots)
    inst = np.zeros(arr.shape, np.uint32)
    for win, lut in zip(grid.windows(), table.luts):
        inst[win.slices] = instance_chunk(arr[win.slices], classes, lut)
    return table, inst


def _oracle(arr, classes):
    """Whole-raster scipy labels per class, renumbered together by first pixel (row-major)."""
    objs = []  # (first pixel, class, mask id, size)
    per_class = {}
    for c in classes:
        lab, n = ndimage.label(arr == c, structure=FOUR)
        per_class[c] = lab
        if n:
            ids, first, size = np.unique(lab.ravel(), return_index=True, return_counts=True)
            objs += [(int(f), c, int(i), int(s)) for i, f, s in zip(ids, first, size) if i]
    objs.sort()
    inst = np.zeros(arr.shape, np.uint32)
    for new, (_, c, i, _) in enumerate(objs, start=1):
        inst[per_class[c] == i] = new
    return objs, inst


blobs = arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 3))


@settings(max_examples=80, deadline=None)
@given(blobs, st.integers(1, 17), st.integers(0, 2**16))
def test_ids_counts_sizes_equal_whole_raster_labelling(arr, chunk, seed):
    arr = ndimage.median_filter(arr, size=2) if arr.size > 4 else arr  # bigger blobs than pure noise
    regions = np.random.default_rng(seed).integers(0, 4, arr.shape)
    classes = [1, 3]
    table, inst = _chunked(arr, regions, chunk, classes, 4)
    objs, want = _oracle(arr, classes)
    assert inst.tobytes() == want.tobytes()
    assert table.first.tolist() == [o[0] for o in objs]
    assert table.cls.tolist() == [o[1] for o in objs] and table.size.tolist() == [o[3] for o in objs]
    # one class: exactly scipy.ndimage.label's ids
    _, inst1 = _chunked(arr, regions, chunk, [1], 4)
    assert inst1.tobytes() == ndimage.label(arr == 1, structure=FOUR)[0].astype(np.uint32).tobytes()
    rows = object_rows(table, [0, 1, 2, 3][1:], {}, classes, 100.0)
    for row in rows:
        in_region = (lambda f: True) if row["region"] == "ALL" else (lambda f, r=row["region"]: regions.flat[f] == r)
        expect = [o for o in objs if o[1] == row["class_id"] and in_region(o[0])]
        assert row["objects"] == len(expect)
        area = arr.size if row["region"] == "ALL" else int((regions == row["region"]).sum())
        assert row["area_ha"] == pytest.approx(area * 100 / 1e4)
        if expect:
            assert row["size_p50_m2"] == pytest.approx(np.quantile([o[3] * 100.0 for o in expect], 0.5))


def _independent_f1(pred, ref, cls_p, cls_r):
    """Dense IoU matrix of whole-raster objects; maximum matching at IoU >= 0.5 (Hungarian)."""
    lp, n_p = ndimage.label(pred == cls_p, structure=FOUR)
    lr, n_r = ndimage.label(ref == cls_r, structure=FOUR)
    iou = np.zeros((n_p, n_r))
    for i in range(1, n_p + 1):
        for j in range(1, n_r + 1):
            a, b = lp == i, lr == j
            iou[i - 1, j - 1] = (a & b).sum() / (a | b).sum()
    ok = iou >= 0.5
    rows, cols = linear_sum_assignment(-ok.astype(float)) if ok.size else ([], [])
    tp = int(ok[rows, cols].sum()) if ok.size else 0
    return tp, n_p, n_r


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, (18, 22), elements=st.integers(0, 1)), st.integers(1, 9), st.integers(0, 2**16))
def test_object_f1_equals_independent_matching(pred, chunk, seed):
    pred = ndimage.binary_opening(pred, structure=FOUR).astype(np.uint8) * 2  # class 2
    rng = np.random.default_rng(seed)
    # the reference: the prediction shifted, with some objects dropped and one added
    ref = np.roll(pred, rng.integers(-1, 2), axis=int(rng.integers(0, 2))) // 2 * 5  # class 5
    lab, n = ndimage.label(ref == 5, structure=FOUR)
    for i in range(1, n + 1):
        if rng.random() < 0.3:
            ref[lab == i] = 0
    ref[0:3, 0:3] = 5
    zeros = np.zeros(pred.shape, np.int64)
    p_tab, p_inst = _chunked(pred, zeros, chunk, [2], 1)
    r_tab, r_inst = _chunked(ref, zeros, chunk, [5], 1)
    grid = chunk_grid(*pred.shape, chunk)
    parts = [overlap_pairs(p_inst[w.slices], r_inst[w.slices]) for w in grid.windows()]
    from geoseg.accuracy.objectstats import _sum_pairs

    hits = score_objects(p_tab, r_tab, _sum_pairs(parts), {2: 5})
    tp, n_p, n_r = _independent_f1(pred, ref, 2, 5)
    assert (int(hits[0].sum()), int(hits[1].sum()), p_tab.n, r_tab.n) == (tp, tp, n_p, n_r)
    rows = object_rows(p_tab, [], {}, [2], 1.0, r_tab, hits, {2: 5})
    want = 2 * tp / (n_p + n_r) if n_p + n_r else float("nan")
    assert rows[0]["f1"] == pytest.approx(want, nan_ok=True)


def test_stage_writes_csv_and_instance_raster(tmp_path):
    """Through the label store and a reference GeoTIFF; instances.zarr read back with rasterio (GDAL)."""
    from geoseg.accuracy.reference import open_reference
    from geoseg.accuracy.regions import grid_regions

    rng = np.random.default_rng(4)
    labels = (ndimage.gaussian_filter(rng.random((150, 170)), 2) > 0.52).astype(np.uint8) + 1  # classes 1, 2
    labels[:4, :6] = 255
    grid = chunk_grid(150, 170, 64)
    write_store(tmp_path / "labels.zarr", labels, 64, SOIL_WEED)
    ref = np.where(np.roll(labels, 1, axis=1) == 2, 3, 1).astype(np.uint8)
    ref_path = write_raster(tmp_path / "ref.tif", ref)
    regions = grid_regions(500.0, grid.grid)  # 10 m pixels: 50 x 50 px cells
    out = run_objects_stage(tmp_path / "labels.zarr", tmp_path, [2], instance_raster=True, regions=regions,
                            reference=open_reference(ref_path, None, grid.grid), reference_classes=[3])
    with rasterio.open(out["instances"]) as ds:
        inst = ds.read(1)
        assert ds.transform == grid.transform and ds.dtypes[0] == "uint32"
    want, n = ndimage.label(labels == 2, structure=FOUR)
    assert inst.tobytes() == want.astype(np.uint32).tobytes()
    rows = list(csv.DictReader(out["objects"].read_text().splitlines()))
    assert rows[0]["region"] == "ALL" and int(rows[0]["objects"]) == n
    assert sum(int(r["objects"]) for r in rows[1:]) == n  # each object in the one region of its first pixel
    tp, n_p, n_r = _independent_f1(labels, ref, 2, 3)
    assert float(rows[0]["f1"]) == pytest.approx(2 * tp / (n_p + n_r))
    assert int(rows[0]["reference_objects"]) == n_r


def test_density_is_per_hectare_of_mapped_pixels_not_of_nodata(tmp_path):
    """A region half under cloud (nodata 255) holds objects only where it is mapped: its density is objects
    per mapped hectare, and its area_ha is that mapped area. Oracle: scipy.ndimage.label and a hand count."""
    from geoseg.accuracy.regions import grid_regions

    rng = np.random.default_rng(11)
    labels = (ndimage.gaussian_filter(rng.random((120, 160)), 2) > 0.52).astype(np.uint8) + 1  # classes 1, 2
    labels[:, :70] = 255  # the west under cloud
    grid = chunk_grid(120, 160, 64)
    write_store(tmp_path / "labels.zarr", labels, 64, SOIL_WEED)
    regions = grid_regions(1000.0, grid.grid)  # 10 m pixels: 100 x 100 px cells
    out = run_objects_stage(tmp_path / "labels.zarr", tmp_path, [2], regions=regions)
    rows = list(csv.DictReader(out["objects"].read_text().splitlines()))
    ha_per_px = grid.grid.pixel_area_m2 / 1e4
    lab, n = ndimage.label(labels == 2, structure=FOUR)
    mapped_px = int((labels != 255).sum())
    assert rows[0]["region"] == "ALL" and int(rows[0]["objects"]) == n
    assert float(rows[0]["area_ha"]) == pytest.approx(mapped_px * ha_per_px)
    assert float(rows[0]["density_per_ha"]) == pytest.approx(n / (mapped_px * ha_per_px), rel=1e-5)
    from geoseg.accuracy.regions import regions_window

    slots = regions_window(regions, grid.grid)  # region k at slot k + 1
    firsts = [int(f) for i, f in zip(*np.unique(lab.ravel(), return_index=True)) if i]
    for k, row in enumerate(rows[1:], start=1):
        assert row["region"] == str(regions.ids[k - 1])
        cell_mapped = int(((slots == k) & (labels != 255)).sum())
        count = sum(1 for f in firsts if slots.ravel()[f] == k)
        assert int(row["objects"]) == count
        assert float(row["area_ha"]) == pytest.approx(cell_mapped * ha_per_px)
        if cell_mapped:
            assert float(row["density_per_ha"]) == pytest.approx(count / (cell_mapped * ha_per_px), rel=1e-5)


def test_reference_objects_under_the_maps_nodata_are_not_counted_as_missed(tmp_path):
    """A map equal to the reference wherever it has data, its west half under cloud (255): object recall was
    0.475 (the reference's objects under the cloud counted as misses) and precision 0.93 (objects cut by the
    cloud's edge against whole reference objects). Pixel scores leave out pixels without a label; so do the
    objects now: the reference is read where the map has data. Oracle: scipy.ndimage.label of the reference
    there, and a perfect map scores 1."""
    from geoseg.accuracy.reference import open_reference

    rng = np.random.default_rng(4)
    truth = (ndimage.gaussian_filter(rng.random((150, 170)), 2) > 0.52).astype(np.uint8) + 1
    labels = truth.copy()
    labels[:, :85] = 255
    grid = chunk_grid(150, 170, 64)
    write_store(tmp_path / "labels.zarr", labels, 64, SOIL_WEED)
    ref_path = write_raster(tmp_path / "ref.tif", truth)
    out = run_objects_stage(tmp_path / "labels.zarr", tmp_path, [2], reference=open_reference(ref_path, None, grid.grid))
    row = list(csv.DictReader(out["objects"].read_text().splitlines()))[0]
    _, n_seen = ndimage.label((truth == 2) & (labels != 255), structure=FOUR)
    assert (int(row["objects"]), int(row["reference_objects"]), int(row["matched"])) == (n_seen, n_seen, n_seen)
    assert float(row["precision"]) == 1.0 and float(row["recall"]) == 1.0
