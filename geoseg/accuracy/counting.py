"""Counting one chunk window: (region, reference class, label) pixel triples as a small sparse array.

Why: a label raster can be far larger than memory, but what accuracy needs is tiny. Each chunk
window of the label grid is read with the reference and the regions brought onto it, and its
pixels are counted into a small 3-D array indexed by (region, reference class, predicted label)
in one compiled pass (:mod:`geoseg._kernels.pixelcount`). Only these count arrays travel and are
summed (:func:`merge_counts`); every figure is then computed from the sums
(:mod:`geoseg.accuracy.evaluate`), so it equals what scikit-learn reports on the pixels themselves.
Axes are sparse: they hold only the values that occurred, so parts with different values are
aligned on the union of their axes when summed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from geoseg._kernels.pixelcount import ValueRanges, dense_histogram, value_ranges


@dataclass
class ChunkCounts:
    """Pixel counts of one or more chunks, on the values that occurred there (sparse axes).

    ``counts[i, j, k]`` = valid pixels of region slot ``regions[i]`` with reference class
    ``ref_values[j]`` and label ``label_values[k]``; ``excluded[i]`` = (label nodata, reference
    nodata, either) pixel counts of that slot.
    """

    regions: np.ndarray
    ref_values: np.ndarray
    label_values: np.ndarray
    counts: np.ndarray
    excluded: np.ndarray
    #: Pixels in no region at all, when regions are counted in several passes (else slot 0 says it).
    outside_px: int = 0

    @classmethod
    def empty(cls) -> ChunkCounts:
        e = np.empty(0, dtype=np.int64)
        return cls(e, e, e, np.zeros((0, 0, 0), np.int64), np.zeros((0, 3), np.int64))

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        return merge_counts([self, other])


def _compact(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of an integer array and each element's index among them.

    Linear time for small value ranges (the usual case), ``np.unique`` otherwise.

    >>> u, i = _compact(np.array([7, 3, 7, 5], dtype=np.int32))
    >>> u.tolist(), i.tolist()
    ([3, 5, 7], [2, 0, 2, 1])
    """
    if v.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.intp)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo < 1 << 16:
        s = v if lo == 0 else v - np.asarray(lo, dtype=v.dtype)
        present = np.bincount(s, minlength=hi - lo + 1) > 0
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(np.int64) + lo, lut[s]
    u, inv = np.unique(v, return_inverse=True)
    return u.astype(np.int64), inv.ravel()


#: Largest dense (region, reference, label) histogram counted directly per chunk; wider value
#: ranges are first renumbered to the values present (see :func:`_compact`).
MAX_BINS = 1 << 21


def _offset_axis(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis values ``lo..hi`` and each element's index ``v - lo`` (no sort; in ``v``'s dtype)."""
    return np.arange(lo, hi + 1, dtype=np.int64), (v - v.dtype.type(lo)) if lo else v


def _int_type(n: int) -> type:
    """Narrowest signed integer type holding ``0..n`` (narrow arithmetic is faster per pixel).

    >>> _int_type(56).__name__, _int_type(70000).__name__
    ('int16', 'int32')
    """
    return np.int16 if n < 2**15 else np.int32 if n < 2**31 else np.int64


def count_pixels(
    labels: np.ndarray, ref_values: np.ndarray, ref_invalid: int | None, slots: np.ndarray, label_nodata: int
) -> ChunkCounts:
    """Count (region slot, reference class, label) triples of one window.

    Reference pixels equal to ``ref_invalid`` (nodata, outside the reference; ``None``: none
    is) and nodata labels are counted in the same pass: invalid reference pixels go to an extra
    reference row and nodata labels are a label column; both are split off the small histogram
    afterwards, so no pixel-sized mask copies are made. Usual value ranges are counted by the
    compiled single pass of :mod:`geoseg._kernels.pixelcount`; wide ones are renumbered first
    (:func:`_count_renumbered`).
    """
    if labels.size == 0:
        return ChunkCounts.empty()
    r = value_ranges(slots, ref_values, ref_invalid, labels)
    spans = {"reg": r.reg_hi - r.reg_lo + 1, "ref": r.ref_hi - r.ref_lo + 2, "lab": r.lab_hi - r.lab_lo + 1}
    if math.prod(spans.values()) <= MAX_BINS:
        dense = dense_histogram(slots, ref_values, ref_invalid, labels, r)
        bounds = ((r.reg_lo, r.reg_hi), (r.ref_lo, r.ref_hi), (r.lab_lo, r.lab_hi))
        reg_axis, ref_axis, lab_axis = (np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in bounds)
        return _split_histogram(dense, reg_axis, ref_axis, lab_axis, label_nodata)
    ref = ref_values.ravel()
    valid = np.ones(ref.size, bool) if ref_invalid is None else ref != ref_invalid
    return _count_renumbered(labels.ravel(), ref, valid, slots.ravel(), label_nodata, r, spans)


def _count_renumbered(
    lab: np.ndarray, ref: np.ndarray, valid: np.ndarray, reg: np.ndarray, label_nodata: int, r: ValueRanges, spans: dict
) -> ChunkCounts:
    """Numpy counting for value ranges too wide for a dense histogram: renumber the widest axes
    to the values present, then one ``bincount`` of the combined index."""
    all_valid = bool(valid.all())
    any_valid = r.ref_lo <= r.ref_hi
    compact = set()
    while math.prod(spans.values()) > MAX_BINS:
        widest = max((k for k in spans if k not in compact), key=lambda k: spans[k], default=None)
        if widest is None:
            break
        compact.add(widest)
        spans[widest] = 1  # stands for "small after renumbering" in this estimate

    reg_vals, reg_i = _compact(reg) if "reg" in compact else _offset_axis(reg, r.reg_lo, r.reg_hi)
    lab_vals, lab_i = _compact(lab) if "lab" in compact else _offset_axis(lab, r.lab_lo, r.lab_hi)
    if not any_valid:
        ref_vals, ref_i = np.empty(0, np.int64), np.zeros(ref.size, np.int16)
    elif "ref" in compact:
        ref_vals, ref_i = _compact(ref if all_valid else np.where(valid, ref, ref.dtype.type(r.ref_lo)))
    else:
        ref_vals, ref_i = _offset_axis(ref, r.ref_lo, r.ref_hi)  # invalid pixels wrap here; reset below
    n_ref = len(ref_vals)
    ng, nr, nl = len(reg_vals), n_ref + 1, len(lab_vals)
    # code = (region * nr + reference) * nl + label, in the narrowest integer types
    inner: np.ndarray = ref_i.astype(_int_type(nr * nl))
    if not all_valid:
        inner[~valid] = n_ref  # the extra "reference nodata" row
    inner *= nl
    inner += lab_i
    code: np.ndarray = reg_i.astype(_int_type(ng * nr * nl))
    code *= nr * nl
    code += inner
    dense = np.bincount(code, minlength=ng * nr * nl).astype(np.int64).reshape(ng, nr, nl)
    return _split_histogram(dense, reg_vals, ref_vals, lab_vals, label_nodata)


def _split_histogram(
    dense: np.ndarray, reg_vals: np.ndarray, ref_vals: np.ndarray, lab_vals: np.ndarray, label_nodata: int
) -> ChunkCounts:
    """Separate nodata from a chunk histogram and keep only the values that occur."""
    n_ref = len(ref_vals)
    j = int(np.searchsorted(lab_vals, label_nodata))
    has_nd = j < len(lab_vals) and lab_vals[j] == label_nodata
    lab_nd = dense[:, :, j].sum(axis=1) if has_nd else np.zeros(len(reg_vals), np.int64)
    ref_nd = dense[:, n_ref, :].sum(axis=1)
    both = dense[:, n_ref, j] if has_nd else 0
    excluded = np.stack([lab_nd, ref_nd, lab_nd + ref_nd - both], axis=1).astype(np.int64)
    core = dense[:, :n_ref, :]
    if has_nd:
        core = np.delete(core, j, axis=2)
        lab_vals = np.delete(lab_vals, j)
    keep_g = dense.sum(axis=(1, 2)) > 0
    keep_r = core.sum(axis=(0, 2)) > 0
    keep_l = core.sum(axis=(0, 1)) > 0
    return ChunkCounts(
        regions=reg_vals[keep_g].astype(np.int64),
        ref_values=ref_vals[keep_r].astype(np.int64),
        label_values=lab_vals[keep_l].astype(np.int64),
        counts=np.ascontiguousarray(core[np.ix_(keep_g, keep_r, keep_l)]),
        excluded=excluded[keep_g],
    )


def merge_counts(parts: Iterable[ChunkCounts]) -> ChunkCounts:
    """Sum count arrays whose axes differ: align every part on the union of its axes."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return ChunkCounts.empty()
    regions = union_sorted(p.regions for p in parts)
    refs = union_sorted(p.ref_values for p in parts)
    labs = union_sorted(p.label_values for p in parts)
    counts = np.zeros((len(regions), len(refs), len(labs)), np.int64)
    excluded = np.zeros((len(regions), 3), np.int64)
    for p in parts:
        ri = np.searchsorted(regions, p.regions)
        counts[np.ix_(ri, np.searchsorted(refs, p.ref_values), np.searchsorted(labs, p.label_values))] += p.counts
        excluded[ri] += p.excluded
    return ChunkCounts(regions, refs, labs, counts, excluded, sum(int(p.outside_px) for p in parts))


def union_sorted(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Sorted distinct int64 values of several arrays (an empty axis for none)."""
    arrays = list(arrays)
    if not arrays:
        return np.empty(0, np.int64)
    return np.unique(np.concatenate([np.asarray(a, np.int64) for a in arrays]))
