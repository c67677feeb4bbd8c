"""The Zarr label store: GDAL/xarray readable, written as a transaction, resumable."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import InputError, OutputError
from geoseg.geo import GeoGrid
from geoseg.io.labelstore import (
    METHOD_LABELS_DIR,
    LabelStoreWriter,
    open_labels,
    read_label_info,
    remap_labels,
    style_path,
)
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL, ClassInfo, cluster_legend, legend_from_attrs

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
    assert [c.name for c in legend_from_attrs(da.attrs)] == [c.name for c in LANDCOVER_CLASSES]
    np.testing.assert_array_equal(da.values, full)


def test_rioxarray_opens_the_store_and_open_labels_round_trips_through_zarr_and_netcdf(tmp_path):
    """GDAL sees one raster (no subdatasets, so rioxarray.open_rasterio works); open_labels' attrs are
    plain values with the fill value in encoding, so xarray writes them back as they are."""
    import h5netcdf  # noqa: F401 - the netCDF4 writer (test extra)
    import rioxarray
    import xarray as xr

    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    full = _fill(writer)
    writer.finalize()
    with rasterio.open(tmp_path / "labels.zarr") as ds:
        assert ds.subdatasets == []
    opened = rioxarray.open_rasterio(tmp_path / "labels.zarr")
    assert opened.shape == (1, *GRID.shape) and opened.rio.crs == CRS_
    np.testing.assert_array_equal(opened.values[0], full)
    da = open_labels(tmp_path / "labels.zarr")
    assert da.dtype == np.uint8 and da.rio.nodata == NODATA_LABEL  # uint8 labels: nodata 255, not NaN
    da.to_zarr(tmp_path / "copy.zarr", mode="w")
    da.to_netcdf(tmp_path / "copy.nc", engine="h5netcdf")
    for path, engine in ((tmp_path / "copy.zarr", "zarr"), (tmp_path / "copy.nc", "h5netcdf")):
        back = xr.open_dataset(path, engine=engine, decode_coords="all", mask_and_scale=False)["labels"]
        assert back.dtype == np.uint8 and back.rio.nodata == NODATA_LABEL and back.rio.crs == CRS_
        assert back.rio.transform() == GRID.transform
        assert legend_from_attrs(back.attrs) == LANDCOVER_CLASSES
        np.testing.assert_array_equal(back.values, full)


def test_the_exact_transform_travels_on_a_fine_grid(tmp_path):
    """A 1 cm grid: open_labels and read_label_info give the job's affine exactly (GDAL before 3.13
    derives it from float coordinates, 0.01 ± 1e-13)."""
    fine = GeoGrid.of(70, 90, Affine(0.01, 0, 600000.005, 0, -0.01, 5200000.015), CRS_).tiles(32)
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", fine, LANDCOVER_CLASSES)
    _fill(writer, fine)
    writer.finalize()
    assert read_label_info(tmp_path / "labels.zarr").grid.transform == fine.transform
    assert open_labels(tmp_path / "labels.zarr").rio.transform() == fine.transform
    with rasterio.open(tmp_path / "labels.zarr") as ds:
        assert ds.transform.almost_equals(fine.transform, precision=1e-9)


@pytest.mark.parametrize(("epsg", "units"), [(4326, ("degrees_east", "degrees_north")),
                                             (32631, ("m", "m")), (2263, ("US_survey_foot", "US_survey_foot"))])
def test_coordinates_say_their_unit_and_a_centre_at_zero_stays_zero(tmp_path, epsg, units):
    """xarray's default open (CF decoding) must give every pixel centre, 0.0 included (the equator, the
    prime meridian, a local origin), in the unit the CRS has; GDAL's grid stays the same."""
    import xarray as xr

    step = 0.1 if epsg == 4326 else 10.0
    t = Affine(step, 0, -5.5 * step, 0, -step, 4.5 * step)  # a pixel centre at x = 0 and at y = 0
    grid = GeoGrid.of(10, 12, t, CRS.from_epsg(epsg)).tiles(8)
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", grid, LANDCOVER_CLASSES)
    _fill(writer, grid)
    writer.finalize()
    ds = xr.open_zarr(tmp_path / "labels.zarr")  # mask_and_scale=True: what a user gets by default
    np.testing.assert_array_equal(ds.x.values, t.c + t.a * (np.arange(12) + 0.5))
    np.testing.assert_array_equal(ds.y.values, t.f + t.e * (np.arange(10) + 0.5))
    assert 0.0 in ds.x.values and 0.0 in ds.y.values
    assert (ds.x.attrs["units"], ds.y.attrs["units"]) == units
    with rasterio.open(tmp_path / "labels.zarr") as src:
        assert src.transform.almost_equals(t, precision=1e-9) and src.crs.to_epsg() == epsg

def test_a_finished_store_has_its_qgis_style_beside_it(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES)
    _fill(writer)
    writer.finalize()
    qml = ET.parse(style_path(tmp_path / "labels.zarr")).getroot()
    assert style_path(tmp_path / "labels.zarr") == tmp_path / "labels.qml"  # QGIS: same base name, .qml
    entries = {int(e.get("value")): (e.get("label"), e.get("color")) for e in qml.iter("paletteEntry")}
    assert entries == {c.id: (c.name, c.color) for c in LANDCOVER_CLASSES}
    conf = LabelStoreWriter.create(tmp_path / "confidence.zarr", GRID, (), array="confidence")
    _fill(conf)
    conf.finalize()
    assert not (tmp_path / "confidence.qml").exists()  # no classes, no palette


def test_remap_labels_is_a_transaction_that_keeps_the_method_labels(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, cluster_legend(6), resume_key="a")
    full = _fill(writer)
    writer.finalize()
    lut = np.arange(256, dtype=np.uint8)
    lut[:6] = [3, 3, 1, 2, 4, 7]  # many-to-one, and one label left unassigned (7)
    legend = (ClassInfo(1, "forest", "#1b7837"), ClassInfo(2, "water", "#2166ac"), ClassInfo(3, "crop", "#e6c84f"),
              ClassInfo(4, "grass", "#a6d96a"), ClassInfo(7, "cluster_5", "#8c564b"))
    remap_labels(tmp_path / "labels.zarr", lut, legend)
    with rasterio.open(tmp_path / "labels.zarr") as ds:
        assert ds.subdatasets == [] and ds.crs == CRS_
        np.testing.assert_array_equal(ds.read(1), lut[full])
    assert read_label_info(tmp_path / "labels.zarr").legend == legend
    method = read_label_info(tmp_path / "labels.zarr" / METHOD_LABELS_DIR)
    assert method.legend == cluster_legend(6)
    np.testing.assert_array_equal(open_labels(method.path).values, full)
    assert not (tmp_path / "labels.zarr.partial").exists()
    assert {int(e.get("value")) for e in ET.parse(tmp_path / "labels.qml").getroot().iter("paletteEntry")} == {1, 2, 3, 4, 7}


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
