"""Areas in m² on a projected grid in US survey feet (EPSG:2263, New York Long Island): every
``area_m2`` and ``perimeter_m`` a run writes is in metres, as ``metrics.csv``'s is, never in feet
under a metre name. Oracle: shapely's planar area and length of the written geometries (in feet)
times the foot's definition (1200/3937 m), not geoseg's own conversion."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

from tests.fixtures import write_raster, write_store

FT = 1200 / 3937  # one US survey foot in metres, by definition
T = Affine(10, 0, 1_000_000, 0, -10, 200_000)  # 10 ft pixels
NY = CRS.from_epsg(2263)


def _labels() -> np.ndarray:
    labels = np.full((96, 96), 1, np.uint8)
    labels[60:, :] = 2  # across chunk seams
    labels[10:30, 20:50] = 3  # a block across a seam, a hole in class 1
    labels[36:46, 70:80] = 4  # a block inside one chunk
    return labels


@pytest.mark.parametrize("simplify", [0.0, 5.0])
def test_polygon_area_and_perimeter_are_metres_on_a_grid_in_feet(tmp_path, dask_client, simplify) -> None:
    from geoseg.vector.vectorize import vectorize_labels

    labels = _labels()
    store = write_store(tmp_path / "labels.zarr", labels, chunk=32, transform=T, crs=NY)
    out, local = tmp_path / "polygons.gpkg", tmp_path / "local.gpkg"
    vectorize_labels(store, out, client=dask_client, simplify_tolerance=simplify)  # workers write part files
    vectorize_labels(store, local, simplify_tolerance=simplify)  # chunks come back to the caller
    for path in (out, local):
        gdf = gpd.read_file(path, layer="polygons")
        assert gdf.crs.to_epsg() == 2263 and sorted(gdf["class_id"]) == [1, 2, 3, 4]
        np.testing.assert_allclose(gdf["area_m2"], shapely.area(gdf.geometry.values) * FT**2, rtol=1e-9)
        np.testing.assert_allclose(gdf["perimeter_m"], shapely.length(gdf.geometry.values) * FT, rtol=1e-9)
        if not simplify:  # the pixels themselves: class 2 is 36 rows of 96 pixels of 10 x 10 ft
            by = gdf.set_index("class_id")
            assert by.loc[2, "area_m2"] == pytest.approx(36 * 96 * 100 * FT**2, rel=1e-12)
            assert by.loc[4, "perimeter_m"] == pytest.approx(400 * FT, rel=1e-12)


def test_evaluation_and_change_area_m2_agree_with_the_polygons_on_a_grid_in_feet(tmp_path) -> None:
    from geoseg.accuracy.change import compare_periods
    from geoseg.accuracy.evaluate import evaluate
    from geoseg.vector.vectorize import vectorize_labels

    labels = _labels()
    store = write_store(tmp_path / "labels.zarr", labels, chunk=32, transform=T, crs=NY)
    ref = write_raster(tmp_path / "ref.tif", labels, crs="EPSG:2263", transform=T)
    vectorize_labels(store, tmp_path / "polygons.gpkg")
    polygons = gpd.read_file(tmp_path / "polygons.gpkg", layer="polygons").groupby("class_id")["area_m2"].sum()
    m = evaluate(store, ref).metrics()
    per_class = m[(m.region_id == "ALL") & (m.kind == "class")].set_index("class_id")["area_m2"]
    for cid in (1, 2, 3, 4):
        truth = (labels == cid).sum() * 100 * FT**2
        assert per_class.loc[cid] == pytest.approx(truth, rel=1e-12)
        assert polygons.loc[cid] == pytest.approx(truth, rel=1e-12)
    after = labels.copy()
    after[:, :48] = 2  # the west half becomes class 2
    report = compare_periods(store, write_store(tmp_path / "after.zarr", after, chunk=32, transform=T, crs=NY))
    assert report.total_area_m2() == pytest.approx(labels.size * 100 * FT**2, rel=1e-12)
    changed = int((labels != after).sum())
    assert report.changed_area_m2() == pytest.approx(changed * 100 * FT**2, rel=1e-12)
    assert report.transitions()["area_m2"].sum() == pytest.approx(labels.size * 100 * FT**2, rel=1e-12)
