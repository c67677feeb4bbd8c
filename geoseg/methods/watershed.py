"""Marker-controlled watershed on the distance transform of a class mask: touching objects split apart.

Why: connected regions merge touching tree crowns or plants into one object. The distance from
each pixel of a class to the nearest pixel outside it peaks at the middle of every round object,
and the watershed of that surface, flooded from one marker per peak, cuts two touching crowns at
their neck. This module works on the numpy arrays of one window; :mod:`geoseg.run.instances`
runs it chunk by chunk.

Chunk independence: every quantity here is a function of the pixels within a fixed distance, so a
chunk read with a halo computes, in its core, the values the whole raster would give.

* The surface is the Euclidean distance transform plus a tiny jitter that is a hash of the pixel's
  *global* position, so no two pixels tie and the order in which the flood reaches pixels is
  decided by the data, not by where a window starts.
* A marker is a pixel whose surface value is the largest within ``min_distance`` pixels
  (a strict maximum: with the jitter exactly one pixel per plateau) and whose distance to the
  object's edge is at least ``min_radius``. Markers are found in each chunk's core and numbered
  on the client by the rank of their position in row-major order: ids do not depend on chunking.
* The flood of a chunk starts from every marker inside its halo window, with its global id.

The halo must exceed the largest object's diameter (the flood of a basin never leaves it, and a
basin is at most one object wide); the default 64 px suits crowns and plants up to ~60 px across.
Larger objects need a larger ``halo`` (a chunk then reads more, not the scene); an instance whose flood
reaches a halo window's edge is refused by :mod:`geoseg.run.instances`, not published chunk-dependent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.errors import JobSpecError

#: Scale of the tie-breaking jitter added to distances (distinct distances differ by ≥ 1e-4 px up to
#: 5,000 px from an edge, so the jitter never reorders two different distances).
_JITTER = 1e-7
#: 4-connectivity, the connectivity of geoseg's regions and polygons.
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass(frozen=True)
class WatershedParams:
    """How objects are split: marker spacing and size, the smoothing of the surface, the halo read."""

    min_distance: int = 5
    min_radius: float = 1.0
    sigma: float = 0.0
    halo: int = 64

    def __post_init__(self) -> None:
        if self.min_distance < 1:
            raise JobSpecError(f"watershed min_distance must be at least 1 px, got {self.min_distance}")
        if self.min_radius < 1.0:
            raise JobSpecError(f"watershed min_radius must be at least 1 px, got {self.min_radius}")
        if self.sigma < 0:
            raise JobSpecError(f"watershed sigma must not be negative, got {self.sigma}")
        need = self.min_distance + int(np.ceil(4 * self.sigma)) + 1
        if self.halo < need:
            raise JobSpecError(f"watershed halo {self.halo} px is smaller than min_distance + 4 sigma + 1 = {need} px")


def pixel_jitter(row0: int, col0: int, shape: tuple[int, int], width: int) -> np.ndarray:
    """Uniform values in [0, 1) that are a hash of each pixel's global row-major index.

    >>> a = pixel_jitter(10, 20, (3, 4), 100)
    >>> bool(np.array_equal(a[1:, 2:], pixel_jitter(11, 22, (2, 2), 100)))
    True
    """
    rows = np.arange(row0, row0 + shape[0], dtype=np.uint64)[:, None]
    cols = np.arange(col0, col0 + shape[1], dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        z = rows * np.uint64(width) + cols + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def distance_surface(mask: np.ndarray, row0: int, col0: int, width: int, sigma: float = 0.0) -> np.ndarray:
    """Distance of each mask pixel to the nearest non-mask pixel (px), smoothed, plus the jitter; -1 off the mask."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(mask)
    if sigma > 0:
        dist = ndimage.gaussian_filter(dist, sigma, mode="nearest")
    surface = dist + _JITTER * pixel_jitter(row0, col0, mask.shape, width)
    surface[~mask] = -1.0
    return surface


def find_markers(surface: np.ndarray, mask: np.ndarray, params: WatershedParams) -> tuple[np.ndarray, ...]:
    """``(rows, cols)`` of the markers of a window: strict local maxima of ``surface`` on the mask.

    A connected region left without a marker (a small one beside a larger object whose peak
    suppresses its own) gets its highest pixel as marker, so every pixel of the class belongs to an
    instance and the semantic and instance rasters agree.
    """
    from scipy import ndimage

    size = 2 * params.min_distance + 1
    peak = ndimage.maximum_filter(surface, size=size, mode="nearest") == surface
    peak &= mask & (surface >= params.min_radius)
    regions, n = ndimage.label(mask, structure=_FOUR)
    has_peak = np.zeros(n + 1, bool)
    has_peak[regions[peak]] = True
    missing = np.flatnonzero(~has_peak[1:]) + 1
    if missing.size:
        for r, c in ndimage.maximum_position(surface, regions, missing):
            peak[r, c] = True
    return np.nonzero(peak)


def flood(surface: np.ndarray, mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Watershed of ``-surface`` within ``mask`` from markers at ``(rows, cols)`` carrying ``ids``; 0 off the mask."""
    from skimage.segmentation import watershed

    markers = np.zeros(surface.shape, np.int64)
    markers[rows, cols] = ids
    out = watershed(-surface, markers=markers, mask=mask, connectivity=1)  # 4-connected
    return out.astype(np.uint32)
