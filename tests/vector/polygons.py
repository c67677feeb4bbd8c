"""Shared helpers of the vectorisation tests: the single-pass oracle, the comparison, random label maps.

Kept out of the test modules so they can share them (``tests/test_layout.py`` forbids one test
module importing another).
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from hypothesis import strategies as st
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.legend import NODATA_LABEL


def single_pass(labels: np.ndarray, transform: Affine = Affine.identity(), skip=(NODATA_LABEL,)):
    """The reference: one rasterio/GDAL polygonising pass over the whole raster."""
    mask = ~np.isin(labels, skip)
    items = list(shapes(labels, mask=mask, connectivity=4, transform=transform))
    geoms = np.array([shape(g) for g, _ in items], dtype=object)
    return geoms, np.array([int(v) for _, v in items], dtype=np.int32)


def assert_same_polygons(geoms, classes, ref_geoms, ref_classes) -> None:
    """Same polygon count per class, same area per class (1e-6 rel.), identical unions."""
    assert shapely.is_valid(geoms).all()
    assert set(shapely.get_type_id(geoms).tolist()) <= {3}  # Polygon only
    for k in np.union1d(classes, ref_classes):
        mine, ref = geoms[classes == k], ref_geoms[ref_classes == k]
        assert len(mine) == len(ref), f"class {k}: {len(mine)} polygons, single pass has {len(ref)}"
        a, b = shapely.area(mine).sum(), shapely.area(ref).sum()
        assert abs(a - b) <= 1e-6 * max(b, 1.0), (k, a, b)
        diff = shapely.symmetric_difference(shapely.union_all(mine), shapely.union_all(shapely.make_valid(ref)))
        assert diff.is_empty or diff.area <= 1e-9 * max(b, 1.0), (k, diff.area)



@st.composite
def label_maps(draw, max_side: int = 60):
    """Small label maps mixing blobs, holes, rings, single and diagonal pixels, nodata."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    n = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["noise", "blobs", "checker", "rings"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        labels = rng.integers(0, n, (h, w))
    elif kind == "blobs":
        cell = draw(st.integers(2, 12))
        coarse = rng.integers(0, n, (h // cell + 1, w // cell + 1))
        labels = np.kron(coarse, np.ones((cell, cell), dtype=int))[:h, :w]
    elif kind == "checker":
        labels = np.add.outer(np.arange(h), np.arange(w)) % 2  # only corner contacts
    else:  # concentric rings: polygons with holes spanning many chunks
        yy, xx = np.mgrid[:h, :w]
        cy, cx = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        labels = (np.maximum(abs(yy - cy), abs(xx - cx)) // draw(st.integers(1, 6))) % max(n, 2)
    labels = labels.astype(np.uint8)
    salt = draw(st.sampled_from([0.0, 0.02, 0.2]))
    labels[rng.random((h, w)) < salt] = rng.integers(0, 5)
    nodata = draw(st.sampled_from([0.0, 0.0, 0.1]))
    labels[rng.random((h, w)) < nodata] = NODATA_LABEL
    chunk = draw(st.integers(1, max(h, w) + 2))
    return labels, chunk
