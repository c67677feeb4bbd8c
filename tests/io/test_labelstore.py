"""The Zarr label store: GDAL/xarray readable, written as a transaction, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import InputError, OutputError
from geoseg.geo import GeoGrid
from geoseg.io.labelstore import LabelStoreWriter, open_labels, read_label_info
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL

CRS_ = CRS.from_epsg(32633)
GRID = GeoGrid.of(70, 90, Affine(10, 0, 600000, 0, -10, 5200000), CRS_).tiles(32)


def _fill(writer, grid=GRID):
    rng = np.random.default_rng(0)
    full = rng.integers(0, 6, grid.shape).astype(np.uint8)
    full[0, 0] = NODATA_LABEL
    for w in grid.windows():
        writer.write(w, full[w.slices])
    return full


def test_gdal_and_xarray_open_the_store_with_georeferencing(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    full = _fill(writer)
    writer.finalize()
    with rasterio.open(tmp_path / "labels.zarr") as ds:
        assert ds.crs == CRS_
        assert ds.transform.almost_equals(GRID.transform)
        assert ds.nodata == NODATA_LABEL
        np.testing.assert_array_equal(ds.read(1), full)
    da = open_labels(tmp_path / "labels.zarr")
    assert da.dtype == np.uint8 and da.rio.crs == CRS_
    assert da.chunks == ((32, 32, 6), (32, 32, 26))
    assert float(da.x[0]) == 600005.0 and float(da.y[0]) == 5199995.0
    assert [c.name for c in da.attrs["legend"]] == [c.name for c in LANDCOVER_CLASSES]
    np.testing.assert_array_equal(da.values, full)


def test_incomplete_store_never_looks_complete(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    first = next(GRID.windows())
    writer.write(first, np.zeros((first.height, first.width), np.uint8))
    assert not (tmp_path / "labels.zarr").exists()
    with pytest.raises(OutputError, match="never written"):
        writer.finalize()
    with pytest.raises(InputError, match="partial"):
        read_label_info(tmp_path / "labels.zarr")


def test_resume_keeps_done_chunks_only_for_the_same_key(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    first = next(GRID.windows())
    writer.write(first, np.zeros((first.height, first.width), np.uint8))
    again = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    assert again.is_done(first)
    other = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="b")
    assert not other.is_done(first)
