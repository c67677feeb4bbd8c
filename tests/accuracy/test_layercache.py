"""The in-memory copy of a small regions layer gives the same region rasters as reading the file."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

import geoseg._kernels.layercache as lc
from geoseg.accuracy.regions import open_regions, regions_window
from geoseg.geo import GeoGrid, window_bounds

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5100000)
SHAPE = (120, 150)
GRID = GeoGrid.of(*SHAPE, TRANSFORM, CRS_UTM)


def voronoi_layer(path: Path, n: int, seed: int, crs: str = "EPSG:4326") -> Path:
    """``n`` Voronoi cells over the raster (plus a margin), ids shuffled, written in ``crs``."""
    rng = np.random.default_rng(seed)
    left, bottom, right, top = window_bounds(TRANSFORM, SHAPE)
    extent = shapely.box(left - 200, bottom - 200, right + 200, top + 200)
    pts = shapely.multipoints(np.column_stack([rng.uniform(left, right, n), rng.uniform(bottom, top, n)]))
    cells = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=extent)), extent)
    gdf = gpd.GeoDataFrame({"zone": rng.permutation(n) + 100}, geometry=cells, crs=CRS_UTM).to_crs(crs)
    gdf.to_file(path, driver="GPKG")
    return path


def region_rasters(path: Path) -> list[np.ndarray]:
    regions = open_regions(path, "zone", GRID)
    grid = GRID.tiles(32)
    return [regions_window(regions, grid.window_grid(w)) for w in grid.windows()]


def test_cached_layer_gives_the_same_regions_as_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = voronoi_layer(tmp_path / "cells.gpkg", 40, seed=3)
    cached = region_rasters(path)
    assert lc._indexed_layer.cache_info().currsize >= 1  # the cache was used
    monkeypatch.setattr(lc, "MAX_CACHED_FEATURES", 0)  # every window read from the file again
    from_file = region_rasters(path)
    for a, b in zip(cached, from_file):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.concatenate([a.ravel() for a in cached]))) >= 30  # most cells present


def test_a_rewritten_layer_is_read_again(tmp_path: Path) -> None:
    path = voronoi_layer(tmp_path / "cells.gpkg", 25, seed=4)
    first = region_rasters(path)
    path.unlink()
    voronoi_layer(path, 25, seed=5)  # same name, other cells
    second = region_rasters(path)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))


def test_large_layers_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = voronoi_layer(tmp_path / "cells.gpkg", 30, seed=6)
    monkeypatch.setattr(lc, "MAX_CACHED_FEATURES", 29)
    assert lc.cached_layer_window(str(path), None, ["zone"], CRS.from_epsg(4326).to_wkt(), GRID.crs_wkt,
                                  window_bounds(TRANSFORM, SHAPE)) is None  # fmt: skip
    monkeypatch.setattr(lc, "MAX_CACHED_FEATURES", 30)
    monkeypatch.setattr(lc, "MAX_CACHED_FILE_BYTES", path.stat().st_size - 1)
    assert lc.cached_layer_window(str(path), None, ["zone"], CRS.from_epsg(4326).to_wkt(), GRID.crs_wkt,
                                  window_bounds(TRANSFORM, SHAPE)) is None  # fmt: skip
    monkeypatch.setattr(lc, "MAX_CACHED_FILE_BYTES", path.stat().st_size)
    df = lc.cached_layer_window(
        str(path), None, ["zone"], CRS.from_epsg(4326).to_wkt(), GRID.crs_wkt, window_bounds(TRANSFORM, SHAPE)
    )
    assert len(df) == 30 and df.crs == CRS_UTM and df.index.is_monotonic_increasing
