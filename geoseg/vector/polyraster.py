"""Label window → polygons of its 4-connected regions, straight from flat coordinate arrays.

Why not GDAL's polygoniser (``rasterio.features.shapes``): it hands every polygon over as a
GeoJSON dict of Python tuples (~100 bytes a vertex) that must then be turned into shapely
geometries; on a fragmented 2048² chunk (~42,000 polygons, ~1.7 M vertices) that made each
vectorise worker peak at ~650 MiB and was most of its CPU time. Here two compiled passes
(:mod:`geoseg.vector.polyraster_loops`) label the regions and follow their boundaries into flat
integer arrays of ring corners (:class:`Rings`); shapely polygons are built from them by one
``shapely.from_ragged_array``, and a chunk's final polygons go straight to WKB in map
coordinates (:meth:`Rings.map_wkb`) without ever being geometries.

The rings follow the rule of :mod:`geoseg.vector.gridunion` (turn right where four boundary
edges meet), so the polygons are those of ``shapes(labels, mask=valid, connectivity=4)`` with
GDAL ≥ 3.7: one polygon per 4-connected region, diagonal neighbours separate, a hole touching
its shell at a corner a separate ring, no collinear vertices (property-tested against it in
``tests/vector/test_polyraster.py``). Ring orientation, first vertex and the order of the polygons
(here: by each region's top-left pixel) may differ from GDAL's; nothing downstream depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely
from affine import Affine


@dataclass(frozen=True)
class Rings:
    """A window's regions as flat rings of integer corners (not closed), grouped by polygon.

    ``order[poly_rings[p]:poly_rings[p + 1]]`` are the indices of polygon ``p``'s rings, its shell
    first; ring ``r``'s corners are ``xs/ys[ring_start[r]:ring_stop[r]]`` (window pixel coordinates;
    add ``x_off``/``y_off`` for the raster's), ``area2[r]`` twice its signed area.
    """

    xs: np.ndarray
    ys: np.ndarray
    ring_start: np.ndarray
    ring_stop: np.ndarray
    area2: np.ndarray
    order: np.ndarray
    poly_rings: np.ndarray
    classes: np.ndarray
    x_off: int = 0
    y_off: int = 0

    def __len__(self) -> int:
        return len(self.classes)

    def bounds(self) -> np.ndarray:
        """``(xmin, ymin, xmax, ymax)`` of every polygon in raster pixel coordinates (as shapely.bounds)."""
        from geoseg.vector.polyraster_loops import shell_bounds

        if len(self) == 0:
            return np.empty((0, 4), dtype=np.float64)
        b = shell_bounds(self.xs, self.ys, self.ring_start, self.ring_stop, self.order[self.poly_rings[:-1]])
        return (b + np.array([self.x_off, self.y_off, self.x_off, self.y_off])).astype(np.float64)

    def area_px(self) -> np.ndarray:
        """Every polygon's area in pixels (exact: shell minus holes)."""
        if len(self) == 0:
            return np.empty(0, dtype=np.float64)
        return np.add.reduceat(self.area2[self.order], self.poly_rings[:-1]).astype(np.float64) / 2.0

    def geometries(self, select: np.ndarray | None = None) -> np.ndarray:
        """The (``select``-ed) polygons as shapely geometries in raster pixel coordinates."""
        from geoseg.vector.polyraster_loops import closed_coords

        n_rings = np.diff(self.poly_rings)
        if select is not None:
            n_rings = n_rings[select]
            first = self.poly_rings[:-1][select]
            order = self.order[np.repeat(first - np.r_[0, np.cumsum(n_rings)[:-1]], n_rings) + np.arange(n_rings.sum())]
        else:
            order = self.order
        if len(n_rings) == 0:
            return np.empty(0, dtype=object)
        coords, ring_offsets = closed_coords(self.xs, self.ys, self.ring_start, self.ring_stop, order,
                                             float(self.x_off), float(self.y_off))
        poly_offsets = np.r_[0, np.cumsum(n_rings)]
        return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))

    def map_wkb(self, select: np.ndarray, transform: Affine) -> tuple[pa.BinaryArray, np.ndarray]:
        """The ``select``-ed polygons as WKB in map coordinates (exterior counter-clockwise, as
        :func:`geoseg.vector.polygonize.to_map_coords` orients them) in one Arrow array, and their
        perimeters in map units: no shapely geometry, no Python object per polygon."""
        from geoseg.vector.polyraster_loops import polygons_wkb

        t = transform
        coeffs = np.array([t.a, t.b, t.c, t.d, t.e, t.f], dtype=np.float64)
        reverse = t.a * t.e - t.b * t.d < 0  # the transform flips orientation: walk rings backwards
        data, offsets, perimeter = polygons_wkb(self.xs, self.ys, self.ring_start, self.ring_stop, self.order,
                                                self.poly_rings, np.asarray(select, dtype=bool),
                                                float(self.x_off), float(self.y_off), coeffs, bool(reverse))
        if offsets[-1] >= 2**31:
            arrow = pa.Array.from_buffers(pa.large_binary(), len(perimeter), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
            arrow = arrow.cast(pa.binary())  # raises clearly if it cannot fit
        else:
            arrow = pa.Array.from_buffers(pa.binary(), len(perimeter),
                                          [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
        return arrow, perimeter


def window_rings(labels: np.ndarray, valid: np.ndarray, x_off: int = 0, y_off: int = 0) -> Rings:
    """Label the 4-connected regions of equal ``labels`` among the ``valid`` pixels and trace their rings."""
    from geoseg.vector.polyraster_loops import label_regions, trace_rings

    labels = np.ascontiguousarray(labels)
    valid = np.ascontiguousarray(valid, dtype=bool)
    if labels.ndim != 2 or labels.shape != valid.shape:
        raise ValueError(f"labels {labels.shape} and valid {valid.shape} must be the same 2-D shape")
    region, region_class = label_regions(labels, valid)
    n_regions = len(region_class)
    xs, ys, ring_stop, ring_region, ring_area2 = trace_rings(region)
    del region
    ring_start = np.r_[0, ring_stop[:-1]].astype(np.int64)
    is_hole = ring_area2 < 0
    order = np.lexsort((is_hole, ring_region))  # by region, its shell first
    shells_per_region = np.bincount(ring_region[~is_hole], minlength=n_regions)
    if not np.all(shells_per_region == 1):  # cannot happen for a pixel boundary; guard the invariant
        raise AssertionError("polyraster: a region without exactly one shell")
    poly_rings = np.r_[0, np.cumsum(np.bincount(ring_region, minlength=n_regions))].astype(np.int64)
    return Rings(xs, ys, ring_start, ring_stop, ring_area2, order, poly_rings, region_class.astype(np.int32),
                 int(x_off), int(y_off))


def polygonize_regions(
    labels: np.ndarray, valid: np.ndarray, x_off: int = 0, y_off: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (shapely, pixel coordinates shifted by the offsets) and classes of the 4-connected
    regions of equal ``labels`` among the ``valid`` pixels; invalid pixels belong to no polygon."""
    rings = window_rings(labels, valid, x_off, y_off)
    return rings.geometries(), rings.classes
