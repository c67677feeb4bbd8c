"""A raster reference is read by the inputs' reader: the compiled nearest warp, the inputs' validity rule."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform

from geoseg.accuracy.reference import SENTINEL, open_reference, reference_pixels, reference_window
from geoseg.geo import GeoGrid

UTM = CRS.from_epsg(32633)
WEB = CRS.from_epsg(3857)


def _web_reference(path, dtype: str = "uint8", nodata: float | None = 0) -> np.ndarray:
    """Blocky classes in EPSG:3857 (1.25 m pixels) over the UTM windows below; a nodata stripe on top."""
    rng = np.random.default_rng(5)
    classes = np.kron(rng.integers(1, 7, (20, 20)), np.ones((15, 15), int)).astype(dtype)
    classes[:12] = 0 if nodata is not None else classes[:12]
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=1, dtype=dtype, crs=WEB,
                       transform=from_origin(1_668_000, 6_068_000, 1.25, 1.25), nodata=nodata) as ds:
        ds.write(classes, 1)
    return classes


def _exact_nearest(src: np.ndarray, src_transform: Affine, grid: GeoGrid, fill: int) -> np.ndarray:
    """Oracle: each target pixel centre projected by PROJ on its own, the source pixel under it."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    x, y = grid.transform * (cols + 0.5, rows + 0.5)
    xs, ys = transform(grid.crs, WEB, x.ravel(), y.ravel())
    col, row = ~src_transform * (np.asarray(xs), np.asarray(ys))
    ci, ri = np.floor(col).astype(int).reshape(x.shape), np.floor(row).astype(int).reshape(x.shape)
    inside = (ci >= 0) & (ri >= 0) & (ci < src.shape[1]) & (ri < src.shape[0])
    out = np.full(grid.shape, fill, dtype=np.int64)
    out[inside] = src[ri[inside], ci[inside]]
    return out


def _windows() -> list[GeoGrid]:
    # UTM 33N around 15.0E 47.7N, where the 3857 raster lies: one window inside it, one across its edge
    x0, y0 = transform(WEB, UTM, [1_668_000.0], [6_068_000.0])
    left, top = round(x0[0]) + 20, round(y0[0]) - 20
    return [GeoGrid.of(96, 128, from_origin(left + 10, top - 15, 1.0, 1.0), UTM),
            GeoGrid.of(120, 90, from_origin(left + 180, top - 200, 1.5, 1.5), UTM)]


def test_warped_reference_is_the_pixel_under_each_centre(tmp_path):
    """The compiled nearest warp equals PROJ per pixel (GDAL's approximate transformer, 0.125 px tolerance,
    picked the neighbour for pixel centres near a source pixel edge); nodata and outside stay invalid."""
    classes = _web_reference(tmp_path / "ref.tif")
    ref = open_reference(tmp_path / "ref.tif")
    seen = []
    for grid in _windows():
        values, invalid = reference_pixels(ref, grid)
        assert values.dtype == np.uint8 and invalid == 0
        want = _exact_nearest(classes, from_origin(1_668_000, 6_068_000, 1.25, 1.25), grid, 0)
        np.testing.assert_array_equal(values, want)
        seen.append(values)
    assert (seen[1] == 0).any() and len(np.unique(np.concatenate([v.ravel() for v in seen]))) == 7


def test_int32_class_ids_beyond_float32_stay_exact(tmp_path):
    """Nearest keeps the file's type: int32 ids above 2**24 (not exact in float32) come back as written."""
    classes = _web_reference(tmp_path / "ref.tif", dtype="int32", nodata=None).astype(np.int64)
    big = classes + 2**24 + 1
    with rasterio.open(tmp_path / "ref.tif", "r+") as ds:
        ds.write(big.astype(np.int32), 1)
    ref = open_reference(tmp_path / "ref.tif")
    grid = _windows()[1]
    values, valid = reference_window(ref, grid)
    want = _exact_nearest(big, from_origin(1_668_000, 6_068_000, 1.25, 1.25), grid, SENTINEL)
    np.testing.assert_array_equal(values, want)
    assert (~valid).any() and valid.any()


def test_reference_gdal_mask_marks_pixels_invalid(tmp_path):
    """A reference's internal GDAL mask is honoured as for inputs (before, only its nodata was)."""
    tr = from_origin(500000, 5100000, 10, 10)
    classes = np.full((50, 50), 3, np.uint8)
    mask = np.full((50, 50), 255, np.uint8)
    mask[10:20, 5:15] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "ref.tif", "w", driver="GTiff", width=50, height=50, count=1, dtype="uint8",
                           crs=UTM, transform=tr) as ds:
            ds.write(classes, 1)
            ds.write_mask(mask)
    ref = open_reference(tmp_path / "ref.tif")
    values, valid = reference_window(ref, GeoGrid.of(50, 50, tr, UTM))
    np.testing.assert_array_equal(valid, mask != 0)
    assert (values[valid] == 3).all() and (values[~valid] == SENTINEL).all()
