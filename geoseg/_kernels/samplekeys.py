"""Per-pixel random keys and the lowest keys of each stratum, one chunk at a time (a stratified sample).

Why keys: a stratified random sample of ``n_h`` pixels of stratum ``h`` is the ``n_h`` pixels with
the lowest keys, where each pixel's key is a counter-based hash of (seed, pixel index). The key
does not depend on how the raster is cut into chunks, so the sample is the same for any chunk size
or task order, and a pass keeps only the ``cap`` lowest keys per stratum seen so far (a buffer of
twice that, cut back to the lowest ``cap`` when full: amortised constant work per kept pixel, and
the threshold a key must beat tightens as pixels pass): memory follows the chunk.

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
_RUN = 64  # pixels checked at once against the window's highest threshold


@compiled
def _fmix(x, mult, off):
    x = np.uint32(x * mult)
    x = np.uint32(x + off)
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x85EBCA6B))
    x = np.uint32(x ^ (x >> np.uint32(13)))
    x = np.uint32(x * np.uint32(0xC2B2AE35))
    return np.uint32(x ^ (x >> np.uint32(16)))


@compiled
def _high_halves(lo_start, mixed_high, off, out):
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
def _compact(keys, idx, n, thr, s, cap):
    """Keep stratum ``s``'s ``cap`` lowest keys of its full buffer; later keys must be below the cap-th."""
    kth = np.partition(keys[s, : n[s]].copy(), cap - 1)[cap - 1]
    j = 0
    for i in range(n[s]):
        if keys[s, i] <= kth:
            keys[s, j] = keys[s, i]
            idx[s, j] = idx[s, i]
            j += 1
    n[s] = j
    thr[s] = kth


@compiled
def _offer_row(row, buf, start, mixed_high, off_lo, thr, keys, idx, n, skip, cap):
    """Append the pixels whose key is below their stratum's threshold; compact a buffer when it fills."""
    size = keys.shape[1]
    for c in range(row.size):
        s = row[c]
        if np.uint64(buf[c]) <= (thr[s] >> np.uint64(32)) and not skip[s]:
            pix = start + c
            lo = _fmix(np.uint32(np.uint32(pix & 0xFFFFFFFF) ^ mixed_high), np.uint32(0x85EBCA77), off_lo)
            key = (np.uint64(buf[c]) << np.uint64(32)) | np.uint64(lo)
            if key < thr[s]:
                keys[s, n[s]] = key
                idx[s, n[s]] = pix
                n[s] += 1
                if n[s] == size:
                    _compact(keys, idx, n, thr, s, cap)


@compiled
def _draw(codes, row_off, col_off, width, off_hi, off_lo, counts4, keys, idx, n, thr, skip, cap):
    h, w = codes.shape
    local = np.zeros_like(counts4)
    flat = codes.reshape(-1)
    size = flat.size
    for i in range(0, size - size % 4, 4):  # four interleaved histograms (see labelcount.py)
        local[0, flat[i]] += 1
        local[1, flat[i + 1]] += 1
        local[2, flat[i + 2]] += 1
        local[3, flat[i + 3]] += 1
    for i in range(size - size % 4, size):
        local[0, flat[i]] += 1
    # the highest threshold of the strata present here: a row whose keys all lie above it keeps nothing,
    # which one vectorised comparison tells (thresholds only fall while the window is drawn)
    top = np.uint32(0)
    for s in range(counts4.shape[1]):
        present = local[0, s] + local[1, s] + local[2, s] + local[3, s]
        counts4[0, s] += present
        if present and not skip[s]:
            top = max(top, np.uint32(min(thr[s] >> np.uint64(32), np.uint64(0xFFFFFFFF))))
    buf = np.empty(w, np.uint32)
    small = (row_off + h) * width < (1 << 32)  # every index of the window fits 32 bits: one run per row
    for r in range(h):
        row = codes[r]
        start = (row_off + r) * width + col_off
        if small:
            s0 = np.uint32(start)
            for b0 in range(0, w, _RUN):  # runs of 64 pixels none of which can be kept are passed over
                b1 = min(b0 + _RUN, w)
                low = np.uint32(0xFFFFFFFF)
                for c in range(b0, b1):  # the hash written out: this loop is vectorised only so
                    x = np.uint32(s0 + np.uint32(c))
                    x = np.uint32(x * np.uint32(0x9E3779B1))
                    x = np.uint32(x + off_hi)
                    x = np.uint32(x ^ (x >> np.uint32(16)))
                    x = np.uint32(x * np.uint32(0x85EBCA6B))
                    x = np.uint32(x ^ (x >> np.uint32(13)))
                    x = np.uint32(x * np.uint32(0xC2B2AE35))
                    x = np.uint32(x ^ (x >> np.uint32(16)))
                    buf[c] = x
                    low = min(low, x)
                if low <= top:
                    _offer_row(row[b0:b1], buf[b0:b1], start + b0, np.uint32(0), off_lo, thr, keys, idx, n, skip, cap)
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
            _offer_row(row[c0:c1], part, first, mixed, off_lo, thr, keys, idx, n, skip, cap)
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


class LowestKeys:
    """Pixel counts per code and each code's ``cap`` lowest-key pixels, over every window offered.

    One object per thread or task, offered its windows in turn: thresholds tighten as windows pass,
    so after the first few windows almost no pixel is kept. ``codes`` are small non-negative
    integers below ``n_codes`` (label bytes, or strata numbered densely); ``skip[code]``: counted but
    never drawn (nodata).
    """

    def __init__(self, n_codes: int, cap: int, seed: int, skip: np.ndarray | None = None) -> None:
        self.cap = max(int(cap), 1)
        self.counts4 = np.zeros((4, n_codes), np.int64)
        # candidates: up to twice the cap, then compacted to the cap lowest (untouched rows cost no memory)
        self.keys = np.empty((n_codes, 2 * self.cap), np.uint64)
        self.pixels = np.empty((n_codes, 2 * self.cap), np.int64)
        self.kept = np.zeros(n_codes, np.int64)
        self.thresholds = np.full(n_codes, np.iinfo(np.uint64).max, np.uint64)  # keys must be below
        self.skip = np.zeros(n_codes, np.bool_) if skip is None else np.asarray(skip, np.bool_).copy()
        if int(cap) < 1:
            self.skip[:] = True
        self.offsets = seed_offsets(seed)

    def offer(self, codes: np.ndarray, row_off: int, col_off: int, width: int) -> None:
        """Count one window (at ``row_off, col_off`` of a raster ``width`` pixels wide) and offer its pixels."""
        _draw(np.ascontiguousarray(codes), int(row_off), int(col_off), int(width), *self.offsets, self.counts4,
              self.keys, self.pixels, self.kept, self.thresholds, self.skip, self.cap)

    @property
    def counts(self) -> np.ndarray:
        return self.counts4.sum(axis=0)

    def lowest(self, code: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``cap`` lowest ``(keys, pixels)`` of one code (fewer if it has fewer pixels), in no order
        (pixels: ``row * width + col``)."""
        k = int(self.kept[code])
        keys, pixels = self.keys[code, :k], self.pixels[code, :k]
        if k > self.cap:
            keep = np.argpartition(keys, self.cap - 1)[: self.cap]
            keys, pixels = keys[keep], pixels[keep]
        return keys.copy(), pixels.copy()


def lowest_keys(codes: np.ndarray, row_off: int, col_off: int, width: int, seed: int, cap: int, n_codes: int,
                skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One window through a fresh :class:`LowestKeys`: ``(counts, keys[n_codes, cap], pixels[n_codes, cap],
    kept[n_codes])``; a code's first ``kept`` entries are its lowest keys, in no order."""
    found = LowestKeys(n_codes, cap, seed, skip)
    found.offer(codes, row_off, col_off, width)
    keys = np.zeros((n_codes, max(cap, 1)), np.uint64)
    pixels = np.zeros((n_codes, max(cap, 1)), np.int64)
    kept = np.zeros(n_codes, np.int64)
    for c in np.flatnonzero(found.kept):
        k, p = found.lowest(int(c))
        keys[c, : len(k)], pixels[c, : len(k)], kept[c] = k, p, len(k)
    return found.counts, keys, pixels, kept
