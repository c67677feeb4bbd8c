"""Compiled single-pass counting of (region slot, reference class, label) triples.

Why compiled: counting is the one pass of an evaluation that touches every pixel besides reading
them. With numpy it takes a dozen array passes (minima, maxima, index arithmetic in temporaries,
``bincount``'s conversion to ``intp``) and cost twice the reads. These two loops read each
pixel once per loop and allocate nothing pixel-sized, and they release the GIL, so threaded
Dask workers count chunks in parallel.

Compiled with numba on first use in a process (about a second) and cached on disk
(:mod:`geoseg.compiled`), so later processes load the machine code instead.
"""

from __future__ import annotations

from functools import lru_cache, partial
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


class _Kernels(NamedTuple):
    ranges: Any
    histogram: Any
    histogram_bytes: Any


@lru_cache(maxsize=None)
def _kernels() -> _Kernels:
    """Compile (or load from the on-disk cache) the loops; numba is imported here, not with geoseg
    (it is slow to import)."""
    from .compiled import compiled

    @compiled
    def ranges(reg, ref, lab, ref_invalid, check_invalid, ref_max, ref_min):  # noqa: ANN001, ANN202
        # min/max without branches, in the inputs' own types: the compiler vectorises this loop
        reg_lo = reg_hi = reg[0]
        lab_lo = lab_hi = lab[0]
        ref_lo, ref_hi = ref_max, ref_min
        for i in range(reg.size):
            reg_lo = min(reg_lo, reg[i])
            reg_hi = max(reg_hi, reg[i])
            lab_lo = min(lab_lo, lab[i])
            lab_hi = max(lab_hi, lab[i])
            ok = ref[i] != ref_invalid or not check_invalid
            ref_lo = min(ref_lo, ref[i] if ok else ref_max)
            ref_hi = max(ref_hi, ref[i] if ok else ref_min)
        return reg_lo, reg_hi, ref_lo, ref_hi, lab_lo, lab_hi

    @partial(compiled, inline="always")
    def bin_of(g, r, lab, ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base):  # noqa: ANN001, ANN202
        j = ref_nodata if check_invalid and r == ref_invalid else np.int64(r)
        return np.int64(g) * per_region + j * n_lab + np.int64(lab) + base

    @compiled
    def histogram(reg, ref, lab, ref_invalid, check_invalid, reg_lo, ref_lo, n_ref, lab_lo, out4):  # noqa: ANN001, ANN202
        # Four interleaved sub-histograms (summed by the caller): on blocky maps consecutive
        # pixels hit the same bin, and one histogram would wait on its own previous increment.
        n_lab = out4.shape[3]
        per_region = out4.shape[2] * n_lab
        size = out4.shape[1] * per_region
        flat = out4.reshape(-1)
        base = -(reg_lo * out4.shape[2] + ref_lo) * n_lab - lab_lo
        ref_nodata = n_ref + ref_lo  # the extra row for invalid reference pixels
        n = reg.size
        for start in range(0, n - n % 4, 4):  # unrolled by four, one sub-histogram each
            for u in range(4):
                i = start + u
                flat[u * size + bin_of(reg[i], ref[i], lab[i], ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base)] += 1
        for i in range(n - n % 4, n):
            flat[bin_of(reg[i], ref[i], lab[i], ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base)] += 1

    @compiled
    def histogram_bytes(reg, ref, lab, reg64, ref64, lab64, ref_invalid, check_invalid, reg_lo, ref_lo, n_ref, lab_lo, out4):  # noqa: ANN001, ANN202, E501
        # All three rasters in bytes, also seen as 8-byte words (``*64``). Maps are blocky: most
        # words hold 8 equal pixels in each raster, counted with one comparison per raster, and
        # a run of such words with the same bin stays in a register until the bin changes.
        # Other words are counted pixel by pixel as in ``histogram``.
        n_lab = out4.shape[3]
        per_region = out4.shape[2] * n_lab
        size = out4.shape[1] * per_region
        flat = out4.reshape(-1)
        base = -(reg_lo * out4.shape[2] + ref_lo) * n_lab - lab_lo
        ref_nodata = n_ref + ref_lo
        ones = np.uint64(0x0101010101010101)
        low = np.uint64(0xFF)
        run, run_bin = 0, 0
        run_reg, run_ref, run_lab = np.uint64(0), np.uint64(0), np.uint64(0)
        for k in range(reg64.size):
            gw, rw, lw = reg64[k], ref64[k], lab64[k]
            if run > 0 and gw == run_reg and rw == run_ref and lw == run_lab:
                run += 8
                continue
            g, r, lb = gw & low, rw & low, lw & low
            if gw == g * ones and rw == r * ones and lw == lb * ones:  # 8 equal pixels, a new bin
                flat[run_bin] += run
                run_bin = bin_of(g, np.uint8(r), lb, ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base)
                run, run_reg, run_ref, run_lab = 8, gw, rw, lw
                continue
            for u in range(8):
                i = 8 * k + u
                flat[(u & 3) * size + bin_of(reg[i], ref[i], lab[i], ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base)] += 1
        flat[run_bin] += run
        for i in range(8 * reg64.size, reg.size):
            flat[bin_of(reg[i], ref[i], lab[i], ref_invalid, check_invalid, ref_nodata, per_region, n_lab, base)] += 1

    return _Kernels(ranges, histogram, histogram_bytes)


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
    ranges = _kernels().ranges
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
    kernels = _kernels()
    n_ref = r.ref_hi - r.ref_lo + 1
    inv, check = _invalid_args(ref, ref_invalid)
    out4 = np.zeros((4, r.reg_hi - r.reg_lo + 1, n_ref + 1, r.lab_hi - r.lab_lo + 1), np.int64)
    flat = [_flat(a) for a in (slots, ref, labels)]
    ranges = (r.reg_lo, r.ref_lo, n_ref, r.lab_lo, out4)
    if all(a.dtype == np.uint8 and a.ctypes.data % 8 == 0 for a in flat):
        words = [a[: a.size - a.size % 8].view(np.uint64) for a in flat]
        kernels.histogram_bytes(*flat, *words, inv, check, *ranges)
    else:
        kernels.histogram(*flat, inv, check, *ranges)
    return out4.sum(axis=0)

