"""The compiled loop of :mod:`geoseg._kernels.polyfill` (imported only when a window is filled: numba is
slow to import).

An edge table rather than GDAL's loop over every edge on every row: each edge adds its crossing
to the rows it spans, so the work follows the crossings (about two per row for a region) and not
rows × edges, which for a detailed boundary of 100,000 vertices across a 2048² window was
200 million tests. The crossings of each row, and so the pixels filled, are the same.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from geoseg._kernels.compiled import compiled


@partial(compiled, inline="always")
def first_row_from(v, height):  # noqa: ANN001, ANN202
    """Smallest row ``y`` in ``0..height`` whose centre line ``y + 0.5`` is at or below ``v``
    (``height`` if none is), decided with the same comparison GDAL makes."""
    if not v > 0.5:
        return 0
    if v > height - 0.5:
        return height
    y = int(np.ceil(v - 0.5))
    while y > 0 and (y - 1) + 0.5 >= v:
        y -= 1
    while y + 0.5 < v:
        y += 1
    return y


@partial(compiled, inline="always")
def sort_small(a):  # noqa: ANN001, ANN202
    """Sort in place: insertion sort for the few crossings a row usually has."""
    if a.size > 32:
        a.sort()
        return
    for i in range(1, a.size):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@compiled
def fill(out, xs, ys, ring_start, feature_ring_start, values):  # noqa: ANN001, ANN202
    """Burn each feature (rings ``feature_ring_start[f]..[f+1]``, closed, in pixel coordinates)
    with ``values[f]``, in order."""
    height, width = out.shape
    for f in range(values.size):
        r0, r1 = feature_ring_start[f], feature_ring_start[f + 1]
        if r0 == r1:
            continue
        p0, p1 = ring_start[r0], ring_start[r1]
        row_lo = first_row_from(ys[p0:p1].min(), height)
        row_hi = first_row_from(ys[p0:p1].max(), height)
        if row_lo >= row_hi:
            continue
        # pass 1: crossings per row (offsets into one array); pass 2: the crossings themselves
        starts = np.zeros(row_hi - row_lo + 1, np.int64)
        for r in range(r0, r1):
            for p in range(ring_start[r] + 1, ring_start[r + 1]):  # edge (p - 1, p)
                lo, hi = min(ys[p - 1], ys[p]), max(ys[p - 1], ys[p])
                if lo == hi:
                    continue  # horizontal
                for y in range(first_row_from(lo, height), first_row_from(hi, height)):
                    starts[y - row_lo + 1] += 1
        for i in range(1, starts.size):
            starts[i] += starts[i - 1]
        crossings = np.empty(starts[-1], np.float64)
        cursor = starts[:-1].copy()
        for r in range(r0, r1):
            for p in range(ring_start[r] + 1, ring_start[r + 1]):
                ya, yb = ys[p - 1], ys[p]
                if ya < yb:
                    xa, xb = xs[p - 1], xs[p]
                elif ya > yb:
                    ya, yb = yb, ya
                    xa, xb = xs[p], xs[p - 1]
                else:
                    continue
                for y in range(first_row_from(ya, height), first_row_from(yb, height)):
                    crossings[cursor[y - row_lo]] = ((y + 0.5) - ya) * (xb - xa) / (yb - ya) + xa
                    cursor[y - row_lo] += 1
        # pass 3: pair each row's sorted crossings and fill between them
        value = values[f]
        for y in range(row_lo, row_hi):
            row_crossings = crossings[starts[y - row_lo] : starts[y - row_lo + 1]]
            sort_small(row_crossings)
            row = out[y]
            for i in range(0, row_crossings.size - 1, 2):
                c0 = max(int(np.floor(row_crossings[i] + 0.5)), 0)
                c1 = min(int(np.floor(row_crossings[i + 1] + 0.5)), width)
                if c0 < c1:
                    row[c0:c1] = value
