"""The compiled loops of :mod:`geoseg._kernels.pixelcount` (imported only when counting starts: numba
is slow to import).

They live at module level, not inside a function, so that numba's on-disk cache finds them
again: a loop that calls a helper captured from an enclosing function missed the cache and was
compiled anew in every process (about half a second).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def ranges(reg, ref, lab, ref_invalid, check_invalid, ref_max, ref_min):
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
def bin_layout(out4, reg_lo, ref_lo, n_ref, lab_lo, ref_invalid, check_invalid):
    """What :func:`bin_of` needs: ``(ref_invalid, check_invalid, invalid row, bins per region,
    labels, offset)`` for a histogram ``out4[4, region, reference (+ invalid row), label]``."""
    n_lab = out4.shape[3]
    offset = -(reg_lo * out4.shape[2] + ref_lo) * n_lab - lab_lo
    return ref_invalid, check_invalid, n_ref + ref_lo, out4.shape[2] * n_lab, n_lab, offset


@partial(compiled, inline="always")
def bin_of(layout, g, r, lab):
    """Flat index in one sub-histogram of pixel (region ``g``, reference ``r``, label ``lab``)."""
    ref_invalid, check_invalid, invalid_row, per_region, n_lab, offset = layout
    j = invalid_row if check_invalid and r == ref_invalid else np.int64(r)
    return np.int64(g) * per_region + j * n_lab + np.int64(lab) + offset


@compiled
def histogram(reg, ref, lab, ref_invalid, check_invalid, reg_lo, ref_lo, n_ref, lab_lo, out4):
    # Four interleaved sub-histograms (summed by the caller): on blocky maps consecutive
    # pixels hit the same bin, and one histogram would wait on its own previous increment.
    layout = bin_layout(out4, reg_lo, ref_lo, n_ref, lab_lo, ref_invalid, check_invalid)
    flat = out4.reshape(-1)
    size = flat.size // 4
    n = reg.size
    for start in range(0, n - n % 4, 4):  # unrolled by four, one sub-histogram each
        for u in range(4):
            i = start + u
            flat[u * size + bin_of(layout, reg[i], ref[i], lab[i])] += 1
    for i in range(n - n % 4, n):
        flat[bin_of(layout, reg[i], ref[i], lab[i])] += 1


@compiled
def histogram_bytes(reg, ref, lab, reg64, ref64, lab64, ref_invalid, check_invalid,
                    reg_lo, ref_lo, n_ref, lab_lo, out4):  # fmt: skip
    # All three rasters in bytes, also seen as 8-byte words (``*64``). Maps are blocky: most
    # words hold 8 equal pixels in each raster, counted with one comparison per raster, and
    # a run of such words with the same bin stays in a register until the bin changes.
    # Other words are counted pixel by pixel as in ``histogram``.
    layout = bin_layout(out4, reg_lo, ref_lo, n_ref, lab_lo, ref_invalid, check_invalid)
    flat = out4.reshape(-1)
    size = flat.size // 4
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
            run_bin = bin_of(layout, g, np.uint8(r), lb)
            run, run_reg, run_ref, run_lab = 8, gw, rw, lw
            continue
        for u in range(8):
            i = 8 * k + u
            flat[(u & 3) * size + bin_of(layout, reg[i], ref[i], lab[i])] += 1
    flat[run_bin] += run
    for i in range(8 * reg64.size, reg.size):
        flat[bin_of(layout, reg[i], ref[i], lab[i])] += 1
