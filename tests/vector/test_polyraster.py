"""The compiled polygoniser gives exactly GDAL's 4-connected polygons (``rasterio.features.shapes``).

Compared polygon by polygon: per class, the normalised geometries (``shapely.normalize``, which
fixes ring orientation, ring order and first vertex) are equal as multisets, so every vertex,
hole and count must agree, not just the areas.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.errors import JobSpecError
from geoseg.geo import Window
from geoseg.legend import NODATA_LABEL
from geoseg.vector.polygonize import POLYGONIZER_ENV, _gdal_polygons_valid, polygonize_window, polygonizer
from geoseg.vector.polyraster import polygonize_regions

pytestmark = pytest.mark.skipif(not _gdal_polygons_valid(), reason="GDAL < 3.7 emits invalid polygons: not an oracle")


def gdal_polygons(labels: np.ndarray, valid: np.ndarray, x_off: int = 0, y_off: int = 0):
    """The oracle: GDAL's polygoniser through rasterio, 4-connected, masked."""
    items = shapes(labels, mask=valid, connectivity=4, transform=Affine.translation(x_off, y_off))
    pairs = [(shape(g), int(v)) for g, v in items]
    return np.array([g for g, _ in pairs], dtype=object), np.array([v for _, v in pairs], dtype=np.int32)


def as_multiset(geoms: np.ndarray, classes: np.ndarray) -> Counter:
    return Counter(zip(classes.tolist(), shapely.to_wkb(shapely.normalize(geoms)).tolist()))


def assert_same_as_gdal(labels, valid, x_off: int = 0, y_off: int = 0) -> None:
    geoms, classes = polygonize_regions(labels, valid, x_off, y_off)
    ref_geoms, ref_classes = gdal_polygons(labels, valid, x_off, y_off)
    assert len(geoms) == len(ref_geoms)
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_type_id(geoms) == 3).all()
    mine, ref = as_multiset(geoms, classes), as_multiset(ref_geoms, ref_classes)
    assert mine == ref, f"differ: mine-only {list((mine - ref).items())[:2]}, GDAL-only {list((ref - mine).items())[:2]}"
    # every valid pixel is covered exactly once
    assert shapely.area(geoms).sum() == valid.sum()


@st.composite
def rasters(draw, max_side: int = 24):
    """Label rasters rich in the hard cases: diagonal touches, holes touching shells at a corner,
    nested holes, 1-pixel regions, whole-window regions, masked pixels."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "blocks", "checker", "nested", "uniform"]))
    n = draw(st.integers(1, 4))
    if kind == "noise":
        labels = rng.integers(0, n, (h, w))
    elif kind == "blocks":
        cell = draw(st.integers(1, 6))
        labels = np.kron(rng.integers(0, n, (h // cell + 1, w // cell + 1)), np.ones((cell, cell), int))[:h, :w]
    elif kind == "checker":  # only corner contacts
        labels = np.add.outer(np.arange(h), np.arange(w)) % 2
    elif kind == "nested":  # square rings inside rings: holes holding islands holding holes
        yy, xx = np.mgrid[:h, :w]
        cy, cx = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        labels = (np.maximum(abs(yy - cy), abs(xx - cx)) // draw(st.integers(1, 3))) % max(n, 2)
    else:  # one region filling the window
        labels = np.full((h, w), n)
    labels = labels.astype(np.uint8)
    salt = draw(st.sampled_from([0.0, 0.05, 0.3]))
    labels[rng.random((h, w)) < salt] = rng.integers(0, 5)
    masked = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    valid = rng.random((h, w)) >= masked
    return labels, valid


@settings(max_examples=400, deadline=None)
@given(rasters(), st.integers(0, 5000), st.integers(0, 5000))
def test_same_polygons_as_gdal(case, x_off, y_off):
    labels, valid = case
    assert_same_as_gdal(labels, valid, x_off, y_off)


@settings(max_examples=150, deadline=None)
@given(rasters(max_side=16), st.sampled_from([(), (0,), (1, NODATA_LABEL), (NODATA_LABEL,)]))
def test_polygonize_window_compiled_equals_gdal(case, skip):
    """The chunk task's entry point: both polygonisers, same window offset, same skipped classes."""
    labels, valid = case
    labels = np.where(valid, labels, NODATA_LABEL).astype(np.uint8)
    window = Window(7, 3, labels.shape[0], labels.shape[1])
    mine = polygonize_window(labels, window, skip, method="compiled")
    gdal = polygonize_window(labels, window, skip, method="gdal")
    assert as_multiset(*mine) == as_multiset(*gdal)
    assert not np.isin(mine[1], skip).any()


@pytest.mark.parametrize(
    "rows",
    [
        [[1, 2], [2, 1]],  # diagonal touches: four separate polygons
        [[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]],  # a hole touching its shell at a corner
        [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]],  # hole open at a corner
        [[1] * 7, [1, 2, 2, 2, 2, 2, 1], [1, 2, 1, 1, 1, 2, 1], [1, 2, 1, 3, 1, 2, 1], [1, 2, 1, 1, 1, 2, 1],
         [1, 2, 2, 2, 2, 2, 1], [1] * 7],  # nested holes
        [[5]],  # one pixel
        [[4, 4, 4], [4, 4, 4]],  # the whole window
    ],
)
def test_the_hard_cases_spelled_out(rows):
    labels = np.array(rows, np.uint8)
    assert_same_as_gdal(labels, np.ones(labels.shape, bool))


def test_hole_touching_the_shell_at_a_corner_is_its_own_ring():
    labels = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0]], np.uint8)
    geoms, classes = polygonize_regions(labels, np.ones(labels.shape, bool))
    ring = geoms[classes == 1]
    assert len(ring) == 1 and len(ring[0].interiors) == 1 and ring[0].area == 7 and ring[0].is_valid


def test_masked_pixels_and_nothing_valid():
    labels = np.array([[1, 1], [1, 1]], np.uint8)
    geoms, classes = polygonize_regions(labels, np.array([[True, False], [False, True]]))
    assert sorted(shapely.area(geoms).tolist()) == [1.0, 1.0] and classes.tolist() == [1, 1]
    geoms, classes = polygonize_regions(labels, np.zeros((2, 2), bool))
    assert len(geoms) == 0 and len(classes) == 0


def test_other_label_dtypes():
    labels = np.array([[300, 300, -1], [2, 300, -1]], np.int16)
    assert_same_as_gdal(labels, np.ones(labels.shape, bool))


def test_choosing_the_polygoniser(monkeypatch):
    monkeypatch.delenv(POLYGONIZER_ENV, raising=False)
    assert polygonizer() == "compiled"
    monkeypatch.setenv(POLYGONIZER_ENV, "GDAL")
    assert polygonizer() == "gdal" and polygonizer("compiled") == "compiled"
    monkeypatch.setenv(POLYGONIZER_ENV, "potrace")
    with pytest.raises(JobSpecError, match=POLYGONIZER_ENV):
        polygonizer()


def _multiset_of_wkb(wkb, classes) -> Counter:
    return as_multiset(shapely.from_wkb(np.asarray(wkb, dtype=object)), np.asarray(classes))


@settings(max_examples=60, deadline=None)
@given(rasters(max_side=20), st.integers(1, 3), st.sampled_from(["projected", "rotated", "geographic", "pixels"]))
def test_chunk_rows_compiled_equal_gdal(case, cut, frame):
    """A chunk task's whole output: final rows (WKB in map coordinates, exterior counter-clockwise,
    areas, perimeters), border pieces and side owners, for the chunks of a small raster."""
    from rasterio.crs import CRS

    from geoseg.geo import GeoGrid
    from geoseg.vector.polygonize import chunk_polygons

    labels, valid = case
    labels = np.where(valid, labels, NODATA_LABEL).astype(np.uint8)
    transform = {"projected": Affine(10, 0, 600000, 0, -10, 5200000), "pixels": Affine(10, 0, 600000, 0, -10, 5200000),
                 "rotated": Affine(3, 1, 1000, 1, -3, 2000), "geographic": Affine(0.01, 0, 10, 0, -0.01, 50)}[frame]
    crs = CRS.from_epsg(4326 if frame == "geographic" else 32633)
    h, w = labels.shape
    grid = GeoGrid.of(h, w, transform, crs).tiles(max(1, max(h, w) // cut))
    for win in grid.windows():
        arr = labels[win.slices]
        got = chunk_polygons(arr, win, grid, skip_classes=(NODATA_LABEL,), world=frame != "pixels",
                             method="compiled", arrow_wkb=True)
        ref = chunk_polygons(arr, win, grid, skip_classes=(NODATA_LABEL,), world=frame != "pixels", method="gdal")
        if frame == "pixels":
            assert as_multiset(got.final, got.final_class) == as_multiset(ref.final, ref.final_class)
        else:
            assert _multiset_of_wkb(got.final, got.final_class) == _multiset_of_wkb(ref.final, ref.final_class)
            mine = shapely.from_wkb(np.asarray(got.final, dtype=object))
            assert shapely.is_ccw(shapely.get_exterior_ring(mine)).all()
            key = np.lexsort((got.final_area_px, got.final_class))
            key_ref = np.lexsort((ref.final_area_px, ref.final_class))
            np.testing.assert_array_equal(got.final_area_px[key], ref.final_area_px[key_ref])
            np.testing.assert_allclose(np.sort(got.final_perimeter_m), np.sort(ref.final_perimeter_m), rtol=1e-12)
            if frame != "geographic":  # else metres on the ellipsoid
                np.testing.assert_allclose(got.final_perimeter_m, shapely.length(mine), rtol=1e-12)
            else:
                np.testing.assert_allclose(np.sort(got.final_area_m2), np.sort(ref.final_area_m2), rtol=1e-9)
        assert as_multiset(got.border, got.border_class) == as_multiset(ref.border, ref.border_class)
        # side owners name the same pixels' polygons (indices differ: compare the owners' shapes)
        for side, owners in got.sides.items():
            ref_owners = ref.sides[side]
            np.testing.assert_array_equal(owners < 0, ref_owners < 0)
            mine_wkb = shapely.to_wkb(shapely.normalize(got.border[owners[owners >= 0]]))
            ref_wkb = shapely.to_wkb(shapely.normalize(ref.border[ref_owners[ref_owners >= 0]]))
            assert mine_wkb.tolist() == ref_wkb.tolist()


def test_windows_too_large_for_int32_indices_use_gdal(monkeypatch):
    import geoseg.vector.polygonize as polygonize
    import geoseg.vector.polyraster as polyraster

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled polygoniser was used")

    monkeypatch.setattr(polygonize, "_COMPILED_MAX_PIXELS", 3)
    monkeypatch.setattr(polyraster, "window_rings", refuse)
    labels = np.array([[1, 2], [2, 2]], np.uint8)
    geoms, classes = polygonize_window(labels, Window(0, 0, 2, 2), method="compiled")
    assert as_multiset(geoms, classes) == as_multiset(*gdal_polygons(labels, np.ones((2, 2), bool)))
