"""A fast per-window warp for the two resamplings most inputs use: nearest and bilinear, not downsampling.

Why not always GDAL: ``rasterio.warp.reproject`` of a float chunk with a nodata value runs at about
4-7 Mpx/s per band here, ten times slower than reading it. The mapping from a window's pixel
centres to source pixel coordinates is smooth, so it is computed exactly on a coarse lattice (every
``STEP`` pixels, with PROJ through rasterio) and interpolated linearly in between (errors far below
a thousandth of a pixel for UTM-to-UTM); a compiled loop then samples every band at once.

The compiled loop is in :mod:`geoseg._kernels.warp_loops`, imported on the first warp (numba is slow to import).

Semantics (the same as GDAL's for valid pixels): a pixel is valid when the source pixel under its
centre is valid; ``nearest`` takes that pixel, at any scale and in the source's own type (class ids
of references and masks stay exact); ``bilinear`` weighs the four nearest source pixels, leaving out
invalid or missing ones and renormalising (so masked garbage never leaks into a valid pixel).
Bilinear downsampling (coarser target pixels) and the other resamplings go through GDAL, whose
kernels widen with the scale.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from affine import Affine

#: Lattice spacing (pixels) at which window centres are projected exactly.
STEP = 32
#: The fast path is used up to this ratio of target to source pixel size (beyond: downsampling).
MAX_SCALE = 1.01


class Lattice(NamedTuple):
    """Source pixel coordinates of target pixel centres on a coarse lattice, and how to interpolate them.

    ``col``/``row`` hold the exact coordinates at lattice rows ``rr`` x columns ``cc``; ``ri, rf`` (per
    target row) and ``ci, cf`` (per target column) are the lattice cell and the fraction within it.
    """

    col: np.ndarray
    row: np.ndarray
    ri: np.ndarray
    rf: np.ndarray
    ci: np.ndarray
    cf: np.ndarray
    scale: float


def source_lattice(
    dst_transform: Affine, shape: tuple[int, int], dst_crs, src_transform: Affine, src_crs
) -> Lattice:
    """Where target pixel centres fall in the source (pixel space), exact on every ``STEP``-th pixel."""
    h, w = shape
    rr = np.unique(np.r_[np.arange(0, h, STEP), h - 1]).astype(np.float64)
    cc = np.unique(np.r_[np.arange(0, w, STEP), w - 1]).astype(np.float64)
    C, R = np.meshgrid(cc + 0.5, rr + 0.5)
    X = dst_transform.a * C + dst_transform.b * R + dst_transform.c
    Y = dst_transform.d * C + dst_transform.e * R + dst_transform.f
    if not (dst_crs == src_crs):
        from rasterio.warp import transform

        xs, ys = transform(dst_crs, src_crs, X.ravel(), Y.ravel())
        X, Y = np.asarray(xs).reshape(X.shape), np.asarray(ys).reshape(Y.shape)
    inv = ~src_transform
    col = inv.a * X + inv.b * Y + inv.c
    row = inv.d * X + inv.e * Y + inv.f
    ri, rf = _cells(rr, h)
    ci, cf = _cells(cc, w)
    return Lattice(col, row, ri, rf, ci, cf, _lattice_scale(col, row, rr, cc))


def _cells(knots: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=np.float64)
    if len(knots) == 1:
        return np.zeros(n, dtype=np.int64), np.zeros(n)
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2).astype(np.int64)
    return i, (x - knots[i]) / (knots[i + 1] - knots[i])


def _lattice_scale(col: np.ndarray, row: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> float:
    steps = [1.0 if len(rr) == 1 and len(cc) == 1 else 0.0]
    if len(cc) > 1:
        d = np.diff(cc)[None, :]
        steps.append(float((np.hypot(np.diff(col, axis=1), np.diff(row, axis=1)) / d).max()))
    if len(rr) > 1:
        d = np.diff(rr)[:, None]
        steps.append(float((np.hypot(np.diff(col, axis=0), np.diff(row, axis=0)) / d).max()))
    return max(steps)


def sample(src: np.ndarray, valid: np.ndarray, lattice: Lattice, shape: tuple[int, int],
           bilinear: bool, dtype: np.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every band of ``src`` at the lattice's target pixels: values ``(bands, h, w)`` and validity.

    Values are float32 unless ``dtype`` says otherwise (``nearest`` keeps the source's type, so class
    ids of any integer type come back exact); invalid pixels hold 0.
    """
    from geoseg._kernels.warp_loops import sample as sample_loop  # numba: imported on the first warp

    out = np.zeros((src.shape[0], *shape), dtype=np.float32 if dtype is None else dtype)
    ok = np.zeros(shape, dtype=np.bool_)
    la = lattice
    sample_loop(np.ascontiguousarray(src), np.ascontiguousarray(valid), la.col, la.row, la.ri, la.rf,
                la.ci, la.cf, out, ok, bilinear)
    return out, ok
