"""Areas in m² on an EPSG:4326 grid, against pyproj.Geod computed here (not geoseg's own function)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
from affine import Affine
from rasterio.crs import CRS

from geoseg.geo import GeoGrid
from tests.fixtures import write_raster, write_store

# a 1° x 1° box at 46-47° N, 14-15° E, as 100 x 100 pixels of 0.01°
N = 100
STEP = 1.0 / N
T = Affine(STEP, 0, 14.0, 0, -STEP, 47.0)
WGS84 = CRS.from_epsg(4326)
GEOD = pyproj.Geod(ellps="WGS84")


def box_area_perimeter(west: float, south: float, east: float, north: float) -> tuple[float, float]:
    """Area and perimeter of a lon/lat box whose north and south edges follow their parallels."""
    lons = np.linspace(west, east, 2001)
    xs = np.concatenate([lons, [east], lons[::-1], [west]])
    ys = np.concatenate([np.full(lons.size, south), [north], np.full(lons.size, north), [south]])
    area, perimeter = GEOD.polygon_area_perimeter(xs, ys)
    return abs(area), perimeter


def test_geographic_pixel_areas_sum_to_the_box_on_the_ellipsoid():
    grid = GeoGrid.of(N, N, T, WGS84)
    box_area, _ = box_area_perimeter(14, 46, 15, 47)
    # sanity of the oracle itself: 1° of latitude (~111.2 km) x 1° of longitude at 46.5° N on a sphere
    assert box_area == pytest.approx(111.2e3 * 111.32e3 * np.cos(np.radians(46.5)), rel=0.01)  # ~8,533 km²
    rows = grid.row_pixel_areas_m2()
    assert rows.shape == (N,) and np.all(np.diff(rows) > 0)  # pixels grow towards the equator
    assert rows.sum() * N == pytest.approx(box_area, rel=1e-6)
    for r in (0, 57, N - 1):
        strip, _ = box_area_perimeter(14, 47 - (r + 1) * STEP, 15, 47 - r * STEP)
        assert rows[r] == pytest.approx(strip / N, rel=1e-6)
    assert grid.pixel_area_m2 * N * N == pytest.approx(box_area, rel=1e-6)
    # projected grids keep their exact figure
    assert GeoGrid.of(2, 2, Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(32633)).pixel_area_m2 == 100.0


def test_polygon_areas_and_perimeters_are_geodesic_on_a_geographic_grid(tmp_path, dask_client):
    from geoseg.vector.vectorize import vectorize_labels

    labels = np.full((N, N), 1, np.uint8)
    labels[60:, :] = 2                      # the south 40 rows: one polygon across chunk seams
    labels[10:30, 20:50] = 3                # a 20 x 30 pixel block inside class 1, across a seam
    labels[36:46, 70:80] = 4                # a 10 x 10 block inside one chunk (no seam merge)
    store = write_store(tmp_path / "labels.zarr", labels, chunk=32, transform=T, crs=WGS84)
    out, local = tmp_path / "polygons.gpkg", tmp_path / "local.gpkg"
    vectorize_labels(store, out, client=dask_client)   # workers write part files
    vectorize_labels(store, local)                     # chunks come back to the caller
    gdf = gpd.read_file(out, layer="polygons")
    assert sorted(gdf["class_id"]) == [1, 2, 3, 4]
    by = gdf.set_index("class_id")
    same = gpd.read_file(local, layer="polygons").set_index("class_id").loc[by.index]
    np.testing.assert_allclose(same[["area_m2", "perimeter_m"]], by[["area_m2", "perimeter_m"]], rtol=1e-12)
    south, south_p = box_area_perimeter(14, 46, 15, 46.4)
    block, block_p = box_area_perimeter(14.2, 46.7, 14.5, 46.9)
    inner, inner_p = box_area_perimeter(14.7, 46.54, 14.8, 46.64)
    north, north_p = box_area_perimeter(14, 46.4, 15, 47)
    assert by.loc[2, "area_m2"] == pytest.approx(south, rel=1e-6)
    assert by.loc[2, "perimeter_m"] == pytest.approx(south_p, rel=1e-6)
    assert by.loc[3, "area_m2"] == pytest.approx(block, rel=1e-6)
    assert by.loc[3, "perimeter_m"] == pytest.approx(block_p, rel=1e-6)
    assert by.loc[4, "area_m2"] == pytest.approx(inner, rel=1e-6)
    assert by.loc[4, "perimeter_m"] == pytest.approx(inner_p, rel=1e-6)
    # class 1 has two holes: its area is the box less the blocks, its perimeter every ring (as planar)
    assert by.loc[1, "area_m2"] == pytest.approx(north - block - inner, rel=1e-6)
    assert by.loc[1, "perimeter_m"] == pytest.approx(north_p + block_p + inner_p, rel=1e-6)


def test_evaluation_area_m2_on_a_geographic_grid(tmp_path):
    from geoseg.accuracy.evaluate import evaluate

    labels = np.full((N, N), 1, np.uint8)
    labels[50:, :] = 2
    store = write_store(tmp_path / "labels.zarr", labels, chunk=50, transform=T, crs=WGS84)
    ref = write_raster(tmp_path / "ref.tif", labels, crs="EPSG:4326", transform=T)
    m = evaluate(store, ref).metrics()
    total = m[(m.region_id == "ALL") & (m.kind == "region")]["area_m2"].iloc[0]
    box_area, _ = box_area_perimeter(14, 46, 15, 47)
    assert total == pytest.approx(box_area, rel=1e-6)
    # per class: pixel count x the scene's mean pixel area (stated approximation), within the
    # spread of pixel areas over 1° of latitude (about 2 %)
    cls = m[(m.region_id == "ALL") & (m.kind == "class")].set_index("class_id")["area_m2"]
    north, _ = box_area_perimeter(14, 46.5, 15, 47)
    assert np.isfinite(cls.loc[1]) and cls.loc[1] == pytest.approx(north, rel=0.02)


def test_change_report_area_m2_on_a_geographic_grid(tmp_path):
    from geoseg.accuracy.change import compare_periods

    before = np.full((N, N), 1, np.uint8)
    after = before.copy()
    after[:, :50] = 2  # the west half changes
    a = write_store(tmp_path / "a.zarr", before, chunk=50, transform=T, crs=WGS84)
    b = write_store(tmp_path / "b.zarr", after, chunk=50, transform=T, crs=WGS84)
    report = compare_periods(a, b)
    box_area, _ = box_area_perimeter(14, 46, 15, 47)
    west, _ = box_area_perimeter(14, 46, 14.5, 47)
    assert report.total_area_m2() == pytest.approx(box_area, rel=1e-6)
    assert report.changed_area_m2() == pytest.approx(west, rel=1e-6)  # a full-height change: mean is exact
