"""geoseg's polygon fill equals GDAL's rasterisation (rasterio.features.rasterize) pixel for pixel."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize

from geoseg._kernels.polyfill import fill_polygons


def star(rng: np.random.Generator, cx: float, cy: float, size: float) -> shapely.Polygon:
    """A random simple polygon, star-shaped around (cx, cy), often not convex, sometimes with a hole."""
    n = int(rng.integers(3, 14))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.1, 1.0, n) * size
    shell = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    if rng.random() < 0.3:
        r = 0.05 * radii.min()
        hole = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
        return shapely.Polygon(shell, [hole])
    return shapely.Polygon(shell)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    n=st.integers(0, 7),
    rotation=st.sampled_from([0.0, 0.0, 17.0]),
    dtype=st.sampled_from(["uint8", "uint16", "int32"]),
)
def test_fill_equals_gdal(seed: int, h: int, w: int, n: int, rotation: float, dtype: str) -> None:
    rng = np.random.default_rng(seed)
    px = float(rng.uniform(0.2, 30))
    transform = Affine(px, 0, rng.uniform(-1e5, 1e5), 0, -px * rng.uniform(0.5, 2), rng.uniform(-1e5, 1e5))
    transform *= Affine.rotation(rotation)
    geoms = []
    for _ in range(n):  # overlapping, partly or wholly outside the window, some multipolygons
        cx, cy = transform * (rng.uniform(-15, w + 15), rng.uniform(-15, h + 15))
        poly = star(rng, cx, cy, rng.uniform(0.3, 40) * px)
        if rng.random() < 0.25:
            other = shapely.affinity.translate(star(rng, cx, cy, 5 * px), 60 * px, 0)
            poly = shapely.MultiPolygon([poly, other]) if not poly.intersects(other) else poly
        geoms.append(poly)
    values = rng.integers(1, 200, n)
    fill = 0 if dtype != "int32" else -(2**31)
    expected = rasterize(list(zip(geoms, values)), out_shape=(h, w), transform=transform, fill=fill, dtype=dtype) if n \
        else np.full((h, w), fill, dtype)  # fmt: skip
    np.testing.assert_array_equal(fill_polygons(geoms, values, transform, (h, w), dtype, fill), expected)


def test_pixel_edge_aligned_boxes_and_later_features_winning() -> None:
    """Boxes on pixel edges cover exactly their pixels; where they overlap, the later one wins."""
    t = Affine(10, 0, 1000, 0, -10, 2000)
    a = shapely.box(1000 + 10, 2000 - 50, 1000 + 40, 2000 - 10)  # cols 1..3, rows 1..4
    b = shapely.box(1000 + 30, 2000 - 30, 1000 + 60, 2000 - 20)  # cols 3..5, row 2
    out = fill_polygons([a, b], [1, 2], t, (6, 7), "uint8")
    expected = np.zeros((6, 7), np.uint8)
    expected[1:5, 1:4] = 1
    expected[2, 3:6] = 2
    np.testing.assert_array_equal(out, expected)


def test_detailed_boundaries_equal_gdal() -> None:
    """Thousands of vertices, a hole, many crossings per row (a jagged outline), across windows."""
    rng = np.random.default_rng(5)
    t = Affine(10, 0, 0, 0, -10, 3000)
    angles = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    radii = 1200 * (1 + 0.15 * np.sin(angles * 97) + 0.03 * rng.standard_normal(angles.size))
    shell = np.column_stack([1500 + radii * np.cos(angles), 1500 + radii * np.sin(angles)])
    hole = shapely.Point(1500, 1500).buffer(300, quad_segs=64)
    region = shapely.Polygon(shell, [hole.exterior.coords]).buffer(0)
    other = shapely.box(0, 0, 900, 900)  # overlaps the region: burnt later, it wins
    for window in ((0, 0, 300, 300), (40, 70, 180, 230), (150, 0, 300, 120)):
        row0, col0, row1, col1 = window
        wt = t * Affine.translation(col0, row0)
        shape = (row1 - row0, col1 - col0)
        expected = rasterize([(region, 1), (other, 2)], out_shape=shape, transform=wt, fill=0, dtype="uint8")
        got = fill_polygons([region, other], [1, 2], wt, shape, "uint8")
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(expected)) >= 2
