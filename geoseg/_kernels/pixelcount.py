"""Compiled single-pass counting of (region slot, reference class, label) triples.

Why compiled: counting is the one pass of an evaluation that touches every pixel besides reading
them. With numpy it takes a dozen array passes (minima, maxima, index arithmetic in temporaries,
``bincount``'s conversion to ``intp``) and cost twice the reads. These loops read each
pixel once per loop and allocate nothing pixel-sized, and they release the GIL, so threaded
Dask workers count chunks in parallel.

Compiled with numba on first use in a process (about a second) and cached on disk
(:mod:`geoseg._kernels.compiled`), so later processes load the machine code instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class ValueRanges(NamedTuple):
    """Smallest and largest region slot, valid reference value and label of one window.

    ``ref_lo > ref_hi`` when no reference pixel is valid.
    """

    reg_lo: int
    reg_hi: int
    ref_lo: int
    ref_hi: int
    lab_lo: int
    lab_hi: int


def _loops():  # the module
    from geoseg._kernels import pixelcount_loops

    return pixelcount_loops


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def _invalid_args(ref: np.ndarray, ref_invalid: int | None) -> tuple[Any, bool]:
    """The invalid value in the reference's own type (compared as such), and whether to check it."""
    if ref_invalid is None:
        return ref.dtype.type(0), False
    info = np.iinfo(ref.dtype)
    if not info.min <= ref_invalid <= info.max:
        return ref.dtype.type(0), False  # no pixel can hold it
    return ref.dtype.type(ref_invalid), True


def value_ranges(slots: np.ndarray, ref: np.ndarray, ref_invalid: int | None, labels: np.ndarray) -> ValueRanges:
    """Ranges of the three axes in one pass (non-empty inputs of equal size); reference pixels
    equal to ``ref_invalid`` are left out of its range."""
    ranges = _loops().ranges
    info = np.iinfo(ref.dtype)
    inv, check = _invalid_args(ref, ref_invalid)
    lo_hi = ranges(_flat(slots), _flat(ref), _flat(labels), inv, check, ref.dtype.type(info.max), ref.dtype.type(info.min))
    ref_lo, ref_hi = (0, -1) if lo_hi[2] > lo_hi[3] else lo_hi[2:4]
    return ValueRanges(int(lo_hi[0]), int(lo_hi[1]), int(ref_lo), int(ref_hi), int(lo_hi[4]), int(lo_hi[5]))


def dense_histogram(
    slots: np.ndarray, ref: np.ndarray, ref_invalid: int | None, labels: np.ndarray, r: ValueRanges
) -> np.ndarray:
    """``out[g, j, k]`` = pixels with slot ``reg_lo + g``, label ``lab_lo + k`` and reference
    ``ref_lo + j``, or ``j == n_ref`` for a reference equal to ``ref_invalid``
    (``n_ref = ref_hi - ref_lo + 1``).

    The ranges must come from :func:`value_ranges` on the same arrays (indices are not checked).
    """
    loops = _loops()
    n_ref = r.ref_hi - r.ref_lo + 1
    inv, check = _invalid_args(ref, ref_invalid)
    out4 = np.zeros((4, r.reg_hi - r.reg_lo + 1, n_ref + 1, r.lab_hi - r.lab_lo + 1), np.int64)
    flat = [_flat(a) for a in (slots, ref, labels)]
    origin = (r.reg_lo, r.ref_lo, n_ref, r.lab_lo, out4)
    if all(a.dtype == np.uint8 and a.ctypes.data % 8 == 0 for a in flat):  # 8 pixels per word
        words = [a[: a.size - a.size % 8].view(np.uint64) for a in flat]
        loops.histogram_bytes(*flat, *words, inv, check, *origin)
    else:
        loops.histogram(*flat, inv, check, *origin)
    return out4.sum(axis=0)

