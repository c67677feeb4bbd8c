"""Per-pixel random keys and the lowest keys of each stratum, one chunk at a time (a stratified sample).

Why keys: a stratified random sample of ``n_h`` pixels of stratum ``h`` is the ``n_h`` pixels with
the lowest keys, where each pixel's key is a counter-based hash of (seed, pixel index). The key
does not depend on how the raster is cut into chunks, so the sample is the same for any chunk size
or task order, and each chunk keeps only its ``cap`` lowest keys per stratum (a bounded max-heap):
memory follows the chunk.

The key is 64 bits: a high half hashed for every pixel, in a loop the compiler vectorises (32-bit
multiplies), and a low half hashed only for the few pixels whose high half is at or below their
stratum's current threshold. Both halves are MurmurHash3's finaliser of an odd multiple of the
pixel index plus a seed offset: bijections of 32-bit integers, so below 2^32 pixels (65,536²) no
two pixels share even the high half; above, pixels 2^32 apart differ through a mixed-in high word.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled

_G1, _G2 = 0x9E3779B1, 0x85EBCA77  # odd multipliers (golden ratio; MurmurHash3's prime 2)


@compiled
def _fmix(x, mult, off):  # noqa: ANN001, ANN202
    x = np.uint32(x * mult)
    x = np.uint32(x + off)
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x85EBCA6B))
    x = np.uint32(x ^ (x >> np.uint32(13)))
    x = np.uint32(x * np.uint32(0xC2B2AE35))
    return np.uint32(x ^ (x >> np.uint32(16)))


@compiled
def _high_halves(lo_start, mixed_high, off, out):  # noqa: ANN001, ANN202
    """High key halves of ``out.size`` consecutive pixels whose index's low word starts at ``lo_start``."""
    s = np.uint32(lo_start)
    for c in range(out.size):  # _fmix written out: the loop is vectorised only so
        x = np.uint32(np.uint32(s + np.uint32(c)) ^ mixed_high)
        x = np.uint32(x * np.uint32(0x9E3779B1))
        x = np.uint32(x + off)
        x = np.uint32(x ^ (x >> np.uint32(16)))
        x = np.uint32(x * np.uint32(0x85EBCA6B))
        x = np.uint32(x ^ (x >> np.uint32(13)))
        x = np.uint32(x * np.uint32(0xC2B2AE35))
        out[c] = np.uint32(x ^ (x >> np.uint32(16)))


@compiled
def _push(keys, idx, n, s, key, pix):  # noqa: ANN001, ANN202
    """Offer (key, pix) to stratum ``s``'s max-heap of at most ``keys.shape[1]`` entries."""
    cap = keys.shape[1]
    if n[s] < cap:  # not full: append and sift up
        i = n[s]
        n[s] += 1
        while i > 0:
            parent = (i - 1) >> 1
            if keys[s, parent] >= key:
                break
            keys[s, i] = keys[s, parent]
            idx[s, i] = idx[s, parent]
            i = parent
        keys[s, i] = key
        idx[s, i] = pix
        return
    i = 0  # full, and key below the largest: replace the root and sift down
    while True:
        child = 2 * i + 1
        if child >= cap:
            break
        if child + 1 < cap and keys[s, child + 1] > keys[s, child]:
            child += 1
        if keys[s, child] <= key:
            break
        keys[s, i] = keys[s, child]
        idx[s, i] = idx[s, child]
        i = child
    keys[s, i] = key
    idx[s, i] = pix


@compiled
def _offer_row(row, buf, start, mixed_high, off_lo, thr, keys, idx, n, skip):  # noqa: ANN001, ANN202
    cap = keys.shape[1]
    for c in range(row.size):
        s = row[c]
        if buf[c] <= thr[s] and not skip[s]:
            pix = start + c
            lo = _fmix(np.uint32(np.uint32(pix & 0xFFFFFFFF) ^ mixed_high), np.uint32(0x85EBCA77), off_lo)
            key = (np.uint64(buf[c]) << np.uint64(32)) | np.uint64(lo)
            if n[s] < cap or key < keys[s, 0]:
                _push(keys, idx, n, s, key, pix)
                if n[s] >= cap:
                    thr[s] = np.uint32(keys[s, 0] >> np.uint64(32))


@compiled
def _draw(codes, row_off, col_off, width, off_hi, off_lo, counts4, keys, idx, n, skip):  # noqa: ANN001, ANN202
    h, w = codes.shape
    cap = keys.shape[1]
    thr = np.full(counts4.shape[1], np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for s in range(counts4.shape[1]):
        if n[s] >= cap:
            thr[s] = np.uint32(keys[s, 0] >> np.uint64(32))
    buf = np.empty(w, np.uint32)
    small = (row_off + h) * width < (1 << 32)  # every index of the window fits 32 bits: one run per row
    for r in range(h):
        row = codes[r]
        for c in range(0, w - w % 4, 4):  # four interleaved histograms (see labelcount.py)
            counts4[0, row[c]] += 1
            counts4[1, row[c + 1]] += 1
            counts4[2, row[c + 2]] += 1
            counts4[3, row[c + 3]] += 1
        for c in range(w - w % 4, w):
            counts4[0, row[c]] += 1
        start = (row_off + r) * width + col_off
        if small:
            s0 = np.uint32(start)
            for c in range(w):  # the hash written out: this loop is vectorised only so
                x = np.uint32(s0 + np.uint32(c))
                x = np.uint32(x * np.uint32(0x9E3779B1))
                x = np.uint32(x + off_hi)
                x = np.uint32(x ^ (x >> np.uint32(16)))
                x = np.uint32(x * np.uint32(0x85EBCA6B))
                x = np.uint32(x ^ (x >> np.uint32(13)))
                x = np.uint32(x * np.uint32(0xC2B2AE35))
                buf[c] = np.uint32(x ^ (x >> np.uint32(16)))
            _offer_row(row, buf, start, np.uint32(0), off_lo, thr, keys, idx, n, skip)
            continue
        c0 = 0
        while c0 < w:  # a row crossing a multiple of 2^32 pixels is hashed in two runs
            first = start + c0
            c1 = min(w, c0 + ((1 << 32) - (first & 0xFFFFFFFF)))
            mixed = np.uint32(0)
            high = first >> 32
            if high:
                mixed = _fmix(np.uint32(high & 0xFFFFFFFF), np.uint32(0x9E3779B1), np.uint32(0x632BE5AB))
            part = buf[c0:c1]
            _high_halves(first & 0xFFFFFFFF, mixed, off_hi, part)
            _offer_row(row[c0:c1], part, first, mixed, off_lo, thr, keys, idx, n, skip)
            c0 = c1


def seed_offsets(seed: int) -> tuple[np.uint32, np.uint32]:
    """The two 32-bit offsets a seed adds before hashing (SplitMix64 of the seed, split)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    z ^= z >> 31
    return np.uint32(z >> 32), np.uint32(z & 0xFFFFFFFF)


def pixel_keys(pixels: np.ndarray, seed: int) -> np.ndarray:
    """The 64-bit keys of global pixel indices (``row * width + col``), as :func:`lowest_keys` computes them."""
    off_hi, off_lo = seed_offsets(seed)
    p = np.asarray(pixels, dtype=np.uint64)
    high = (p >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        mixed = np.where(high == 0, np.uint32(0), _np_fmix(high, _G1, np.uint32(0x632BE5AB)))
        x = (p & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ mixed
        hi = _np_fmix(x, _G1, off_hi)
        lo = _np_fmix(x, _G2, off_lo)
    return (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)


def _np_fmix(x: np.ndarray, mult: int, off: np.uint32) -> np.ndarray:
    x = (x * np.uint32(mult) + off).astype(np.uint32)
    x ^= x >> np.uint32(16)
    x = (x * np.uint32(0x85EBCA6B)).astype(np.uint32)
    x ^= x >> np.uint32(13)
    x = (x * np.uint32(0xC2B2AE35)).astype(np.uint32)
    return x ^ (x >> np.uint32(16))


class KeyHeaps:
    """Pixel counts per code and each code's ``cap`` lowest-key pixels, over every window offered.

    One object per thread or task, offered its windows in turn: thresholds tighten as windows pass,
    so after the first few windows almost no pixel reaches a heap. ``codes`` are small non-negative
    integers below ``n_codes`` (label bytes, or strata numbered densely); ``skip[code]``: counted but
    never drawn (nodata).
    """

    def __init__(self, n_codes: int, cap: int, seed: int, skip: np.ndarray | None = None) -> None:
        self.cap = int(cap)
        self.counts4 = np.zeros((4, n_codes), np.int64)
        self.keys = np.empty((n_codes, max(self.cap, 1)), np.uint64)
        self.pixels = np.empty((n_codes, max(self.cap, 1)), np.int64)
        self.kept = np.zeros(n_codes, np.int64)
        self.skip = np.zeros(n_codes, np.bool_) if skip is None else np.asarray(skip, np.bool_).copy()
        if self.cap < 1:
            self.skip[:] = True
        self.offsets = seed_offsets(seed)

    def offer(self, codes: np.ndarray, row_off: int, col_off: int, width: int) -> None:
        """Count one window (at ``row_off, col_off`` of a raster ``width`` pixels wide) and offer its pixels."""
        _draw(np.ascontiguousarray(codes), int(row_off), int(col_off), int(width), *self.offsets, self.counts4,
              self.keys, self.pixels, self.kept, self.skip)

    @property
    def counts(self) -> np.ndarray:
        return self.counts4.sum(axis=0)

    def lowest(self, code: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept ``(keys, pixels)`` of one code, in no order (pixels: ``row * width + col``)."""
        k = int(self.kept[code])
        return self.keys[code, :k].copy(), self.pixels[code, :k].copy()


def lowest_keys(codes: np.ndarray, row_off: int, col_off: int, width: int, seed: int, cap: int, n_codes: int,
                skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One window through a fresh :class:`KeyHeaps`: ``(counts, keys[n_codes, cap], pixels[n_codes, cap],
    kept[n_codes])``; a code's first ``kept`` entries are valid, in no order."""
    heaps = KeyHeaps(n_codes, cap, seed, skip)
    heaps.offer(codes, row_off, col_off, width)
    return heaps.counts, heaps.keys, heaps.pixels, heaps.kept
