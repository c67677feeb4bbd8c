"""The compiled loops of :mod:`geoseg.vector.gridunion`: one pass each over a batch's vertices
(integer check, splitting the seam edges, following the rings, gathering them in order).

Kept apart (and at module level) so numba's on-disk cache finds them and importing gridunion stays
cheap; see :mod:`geoseg._kernels.compiled`. As numpy expressions these passes made many
temporaries of the whole batch and took three times as long.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def split_edges(xy, ring_start, cell, offx, offy, touch):
    """Every ring's edges in order, those along a seam line (a multiple of ``cell`` after adding the
    offsets) split into unit edges; zero-length edges dropped.

    Returns start and end corners, the direction code (0 +x, 1 +y, 2 -x, 3 -y), whether the edge
    is a seam unit edge, whether its start / end corner must be re-linked (on a seam line, or a
    ``touch`` vertex), its ring, and its ring successor; ``ok`` is False for a diagonal edge.
    """
    n_rings = ring_start.shape[0] - 1
    total = 0
    for r in range(n_rings):
        for j in range(ring_start[r], ring_start[r + 1] - 1):
            dx = xy[j + 1, 0] - xy[j, 0]
            dy = xy[j + 1, 1] - xy[j, 1]
            if dx != 0 and dy != 0:
                empty = np.empty((0, 2), dtype=np.int64)
                e1 = np.empty(0, dtype=np.int8)
                eb = np.empty(0, dtype=np.bool_)
                ei = np.empty(0, dtype=np.int64)
                return empty, empty, e1, eb, eb, eb, ei, ei, False
            length = abs(dx) + abs(dy)
            if length == 0:
                continue
            along = (dx == 0 and (xy[j, 0] + offx) % cell == 0) or (dy == 0 and (xy[j, 1] + offy) % cell == 0)
            total += length if along else 1
    start = np.empty((total, 2), dtype=np.int64)
    end = np.empty((total, 2), dtype=np.int64)
    code = np.empty(total, dtype=np.int8)
    seam = np.zeros(total, dtype=np.bool_)
    link_start = np.zeros(total, dtype=np.bool_)
    link_end = np.zeros(total, dtype=np.bool_)
    ring = np.empty(total, dtype=np.int64)
    nxt = np.empty(total, dtype=np.int64)
    k = 0
    for r in range(n_rings):
        first = k
        for j in range(ring_start[r], ring_start[r + 1] - 1):
            x0, y0 = xy[j, 0], xy[j, 1]
            x1, y1 = xy[j + 1, 0], xy[j + 1, 1]
            dx, dy = x1 - x0, y1 - y0
            length = abs(dx) + abs(dy)
            if length == 0:
                continue
            ux = 1 if dx > 0 else (-1 if dx < 0 else 0)
            uy = 1 if dy > 0 else (-1 if dy < 0 else 0)
            c = 0 if ux > 0 else (1 if uy > 0 else (2 if ux < 0 else 3))
            along = (dx == 0 and (x0 + offx) % cell == 0) or (dy == 0 and (y0 + offy) % cell == 0)
            if along:
                for s in range(length):
                    start[k, 0] = x0 + ux * s
                    start[k, 1] = y0 + uy * s
                    end[k, 0] = x0 + ux * (s + 1)
                    end[k, 1] = y0 + uy * (s + 1)
                    code[k] = c
                    seam[k] = True
                    link_start[k] = True
                    link_end[k] = True
                    ring[k] = r
                    nxt[k] = k + 1
                    k += 1
            else:
                start[k, 0], start[k, 1] = x0, y0
                end[k, 0], end[k, 1] = x1, y1
                code[k] = c
                link_start[k] = touch[j] or (x0 + offx) % cell == 0 or (y0 + offy) % cell == 0
                link_end[k] = touch[j + 1] or (x1 + offx) % cell == 0 or (y1 + offy) % cell == 0
                ring[k] = r
                nxt[k] = k + 1
                k += 1
        if k > first:
            nxt[k - 1] = first
    return start, end, code, seam, link_start, link_end, ring, nxt, True


@compiled
def trace_rings(nxt, kept, start, code):
    """Follow the kept edges into rings; keep the corners where the direction changes.

    Returns the corner points with each ring closed (first point repeated), each ring's offset
    into them (plus the total at the end), each ring's first edge, and its signed twice-area
    (shoelace, exact in integers; positive: counter-clockwise).
    """
    n = nxt.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    buf = np.empty(n, dtype=np.int64)
    pts = np.empty((n + n // 4 + 2, 2), dtype=np.int64)  # a ring has at least 4 edges: at most n/4 closings
    cap = n // 4 + 2
    offsets = np.empty(cap + 1, dtype=np.int64)
    firsts = np.empty(cap, dtype=np.int64)
    areas = np.empty(cap, dtype=np.int64)
    offsets[0] = 0
    p = 0
    r = 0
    for i in range(n):
        if seen[i] or not kept[i]:
            continue
        m = 0
        j = i
        while not seen[j]:
            seen[j] = True
            buf[m] = j
            m += 1
            j = nxt[j]
        first_p = p
        prev_code = code[buf[m - 1]]
        for t in range(m):
            e = buf[t]
            if code[e] != prev_code:
                pts[p, 0] = start[e, 0]
                pts[p, 1] = start[e, 1]
                p += 1
            prev_code = code[e]
        pts[p, 0] = pts[first_p, 0]
        pts[p, 1] = pts[first_p, 1]
        p += 1
        a2 = 0
        for t in range(first_p, p - 1):
            a2 += pts[t, 0] * pts[t + 1, 1] - pts[t + 1, 0] * pts[t, 1]
        offsets[r + 1] = p
        firsts[r] = i
        areas[r] = a2
        r += 1
    return pts[:p], offsets[:r + 1], firsts[:r], areas[:r]


@compiled
def to_grid(xy):
    """Integer coordinates relative to their minimum, the minimum, and whether all were integers."""
    n = xy.shape[0]
    out = np.empty((n, 2), dtype=np.int64)
    if n == 0:
        return out, 0.0, 0.0, True
    x0, y0 = xy[0, 0], xy[0, 1]
    for i in range(n):
        x, y = xy[i, 0], xy[i, 1]
        if x != np.floor(x) or y != np.floor(y):
            return out, 0.0, 0.0, False
        x0 = min(x0, x)
        y0 = min(y0, y)
    for i in range(n):
        out[i, 0] = np.int64(xy[i, 0] - x0)
        out[i, 1] = np.int64(xy[i, 1] - y0)
    return out, x0, y0, True


@compiled
def gather_rings(pts, offsets, order, ox, oy):
    """The rings' points (``offsets`` into ``pts``) in ``order``, shifted back by the origin, as floats."""
    total = 0
    for r in order:
        total += offsets[r + 1] - offsets[r]
    out = np.empty((total, 2), dtype=np.float64)
    ring_offsets = np.empty(order.shape[0] + 1, dtype=np.int64)
    ring_offsets[0] = 0
    k = 0
    for t in range(order.shape[0]):
        r = order[t]
        for i in range(offsets[r], offsets[r + 1]):
            out[k, 0] = pts[i, 0] + ox
            out[k, 1] = pts[i, 1] + oy
            k += 1
        ring_offsets[t + 1] = k
    return out, ring_offsets
