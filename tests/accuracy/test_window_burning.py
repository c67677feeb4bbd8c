"""Regions and vector references burnt window by window equal one burn of the whole raster, sliced.

Each chunk task reads only the features meeting its window (from the worker's in-memory copy or
from the file) and burns them on the window's grid; the counts are right only if that equals
burning every feature once over the whole label grid, which is checked here against
``rasterio.features.rasterize`` of the layer itself (the oracle: GDAL's pixel-centre rule, later
features winning where they overlap).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.features import rasterize

import geoseg._kernels.layercache as lc
from geoseg.accuracy.reference import SENTINEL, open_reference, reference_window
from geoseg.accuracy.regions import open_regions, regions_window
from geoseg.geo import GeoGrid, bounds_overlap

CRS_UTM = CRS.from_epsg(32633)


def star(rng: np.random.Generator, cx: float, cy: float, size: float) -> shapely.Polygon:
    """A random simple polygon, star-shaped around (cx, cy), often not convex, sometimes with a hole."""
    n = int(rng.integers(3, 14))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.1, 1.0, n) * size
    shell = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    if rng.random() < 0.3:
        r = 0.05 * radii.min()
        hole = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
        holed = shapely.Polygon(shell, [hole])
        if holed.is_valid:  # the centre need not be inside the star: then the hole would make it invalid
            return holed  # (invalid polygons are repaired before burning: tested with a bowtie elsewhere)
    return shapely.Polygon(shell)


def random_layer(rng: np.random.Generator, grid: GeoGrid, n: int) -> gpd.GeoDataFrame:
    """``n`` overlapping polygons over and around the grid (some multipolygons), ids and classes shuffled."""
    t, (h, w) = grid.transform, grid.shape
    geoms = []
    for i in range(n):  # the first one centred on the grid, so that the layer overlaps it
        col, row = (rng.uniform(0, w), rng.uniform(0, h)) if i == 0 else (rng.uniform(-10, w + 10), rng.uniform(-10, h + 10))
        cx, cy = t * (col, row)
        poly = star(rng, cx, cy, rng.uniform(1, 40) * t.a)
        if rng.random() < 0.25:
            other = shapely.affinity.translate(star(rng, cx, cy, 5 * t.a), 50 * t.a, 0)
            poly = shapely.MultiPolygon([poly, other]) if not poly.intersects(other) else poly
        geoms.append(poly)
    return gpd.GeoDataFrame(
        {"zone": rng.permutation(n) * 7 + 3, "cls": rng.integers(0, 6, n)}, geometry=geoms, crs=CRS_UTM
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    per_side=st.integers(1, 6),
    n=st.integers(1, 12),
    cached=st.booleans(),
)
def test_windows_equal_one_whole_burn_and_gdal(seed: int, h: int, w: int, per_side: int, n: int, cached: bool) -> None:
    chunk = -(-max(h, w) // per_side)  # up to 6 x 6 windows, some of them one pixel wide
    rng = np.random.default_rng(seed)
    px = float(rng.uniform(0.5, 20))
    grid = GeoGrid.of(h, w, Affine(px, 0, 500000 + rng.uniform(-1e3, 1e3), 0, -px, 5100000), CRS_UTM)
    gdf = random_layer(rng, grid, n)
    # a star-shaped polygon need not cover its centre: a layer beside the grid is refused (tested elsewhere)
    assume(bounds_overlap(tuple(float(v) for v in gdf.total_bounds), grid.bounds))
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        if not cached:
            mp.setattr(lc, "MAX_CACHED_FEATURES", 0)  # every window queried from the file
        path = Path(folder) / "layer.gpkg"
        gdf.to_file(path, driver="GPKG")
        regions = open_regions(path, "zone", grid)
        reference = open_reference(path, "cls")
        tiles = grid.tiles(chunk)
        slots = np.zeros(grid.shape, np.int64)
        classes = np.zeros(grid.shape, np.int64)
        for win in tiles.windows():
            slots[win.slices] = regions_window(regions, tiles.window_grid(win))
            classes[win.slices] = reference_window(reference, tiles.window_grid(win))[0]
        np.testing.assert_array_equal(slots, regions_window(regions, grid))
        np.testing.assert_array_equal(classes, reference_window(reference, grid)[0])
    slot_of_zone = {z: i + 1 for i, z in enumerate(sorted(gdf["zone"]))}
    oracle = rasterize(zip(gdf.geometry, [slot_of_zone[z] for z in gdf["zone"]]), out_shape=grid.shape,
                       transform=grid.transform, fill=0, dtype="int32")  # fmt: skip
    np.testing.assert_array_equal(slots, oracle)
    oracle_cls = rasterize(zip(gdf.geometry, gdf["cls"].tolist()), out_shape=grid.shape, transform=grid.transform,
                           fill=-1, dtype="int32")  # fmt: skip
    np.testing.assert_array_equal(classes, np.where(oracle_cls < 0, SENTINEL, oracle_cls))
