"""Label window → polygons of its 4-connected regions, straight from flat coordinate arrays.

Why not GDAL's polygoniser (``rasterio.features.shapes``): it hands every polygon over as a
GeoJSON dict of Python tuples (~100 bytes a vertex) that must then be turned into shapely
geometries; on a fragmented 2048² chunk (~42,000 polygons, ~1.7 M vertices) that made each
vectorise worker peak at ~650 MiB and was most of its CPU time. Here two compiled passes
(:mod:`geoseg.vector.polyraster_loops`) label the regions and follow their boundaries into flat
integer arrays of ring corners, and the polygons are built by one ``shapely.from_ragged_array``.

The rings follow the rule of :mod:`geoseg.vector.gridunion` (turn right where four boundary
edges meet), so the polygons are those of ``shapes(labels, mask=valid, connectivity=4)`` with
GDAL ≥ 3.7: one polygon per 4-connected region, diagonal neighbours separate, a hole touching
its shell at a corner a separate ring, no collinear vertices (tested against it property by
property in ``tests/vector/test_polyraster.py``). Ring orientation and first vertex may differ from
GDAL's; nothing downstream depends on them.
"""

from __future__ import annotations

import numpy as np
import shapely


def polygonize_regions(
    labels: np.ndarray, valid: np.ndarray, x_off: int = 0, y_off: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (shapely, pixel coordinates shifted by the offsets) and classes of the 4-connected
    regions of equal ``labels`` among the ``valid`` pixels; invalid pixels belong to no polygon."""
    from geoseg.vector.polyraster_loops import closed_coords, label_regions, trace_rings

    labels = np.ascontiguousarray(labels)
    valid = np.ascontiguousarray(valid, dtype=bool)
    if labels.ndim != 2 or labels.shape != valid.shape:
        raise ValueError(f"labels {labels.shape} and valid {valid.shape} must be the same 2-D shape")
    region, region_class = label_regions(labels, valid)
    n_regions = len(region_class)
    if n_regions == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
    xs, ys, ring_stop, ring_region, ring_area2 = trace_rings(region)
    del region
    ring_start = np.r_[0, ring_stop[:-1]]
    is_hole = ring_area2 < 0
    order = np.lexsort((is_hole, ring_region))  # by region, its shell first
    shells_per_region = np.bincount(ring_region[~is_hole], minlength=n_regions)
    if not np.all(shells_per_region == 1):  # cannot happen for a pixel boundary; guard the invariant
        raise AssertionError("polyraster: a region without exactly one shell")
    coords, ring_offsets = closed_coords(xs, ys, ring_start, ring_stop, order, float(x_off), float(y_off))
    poly_offsets = np.r_[0, np.cumsum(np.bincount(ring_region, minlength=n_regions))]
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))
    return geoms, region_class.astype(np.int32)
