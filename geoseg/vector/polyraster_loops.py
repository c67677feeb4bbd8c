"""The compiled loops of :mod:`geoseg.vector.polyraster`: label 4-connected regions, trace their rings.

Kept apart (and at module level) so numba's on-disk cache finds them and importing polyraster
stays cheap; see :mod:`geoseg._kernels.compiled`. Coordinates: ``x`` = column, ``y`` = row of
the window, pixel ``(r, c)`` is the square ``[c, c + 1] x [r, r + 1]``; a ring has its region on
the left (``(-dy, dx)`` of its direction), so a shell has a positive shoelace area, a hole a
negative one, in these coordinates.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled
from geoseg._kernels.components import find_root


@compiled
def label_regions(labels, valid):
    """4-connected regions of equal valid labels: ``(region of each pixel or -1, class of each region)``.

    Union-find in one raster scan over a single int32 array (each root the region's first pixel
    in raster order), then two in-place passes: point every pixel at its root, then number the
    regions in raster order (so a region's number follows its top-left-most pixel). One array of
    the window's size, not two.
    """
    h, w = labels.shape
    region = np.empty((h, w), dtype=np.int32)
    parent = region.reshape(h * w)
    for r in range(h):
        for c in range(w):
            p = r * w + c
            if not valid[r, c]:
                parent[p] = -1
                continue
            parent[p] = p
            v = labels[r, c]
            if c > 0 and valid[r, c - 1] and labels[r, c - 1] == v:
                parent[p] = find_root(parent, p - 1)
            if r > 0 and valid[r - 1, c] and labels[r - 1, c] == v:
                a = find_root(parent, p - w)
                b = find_root(parent, p)
                if a < b:
                    parent[b] = a
                elif b < a:
                    parent[a] = b
    # every pixel to its root: a parent precedes its child and is already resolved
    for p in range(h * w):
        if parent[p] >= 0:
            parent[p] = parent[parent[p]]
    # number the roots in raster order; a pixel not yet numbered still holds its root's index,
    # which precedes it and holds the root's number by then
    cls = np.empty(h * w if h * w < 1024 else 1024, dtype=np.int64)
    n = 0
    for p in range(h * w):
        q = parent[p]
        if q < 0:
            continue
        if q == p:
            if n == cls.shape[0]:
                grown = np.empty(2 * n, dtype=np.int64)
                grown[:n] = cls
                cls = grown
            cls[n] = labels[p // w, p % w]
            parent[p] = n
            n += 1
        else:
            parent[p] = parent[q]
    return region, cls[:n].copy()


@compiled
def _inside(region, r, c, k):
    return 0 <= r < region.shape[0] and 0 <= c < region.shape[1] and region[r, c] == k


@compiled
def _grow(a, n):
    out = np.empty(2 * a.shape[0] + 16, dtype=a.dtype)
    out[:n] = a[:n]
    return out


@compiled
def trace_rings(region):
    """Every region's boundary as rings of corner vertices: ``(x, y, ring_end, ring_region, ring_area2)``.

    Each boundary pixel edge (a region pixel beside a pixel of another region, a skipped pixel or
    the window's edge) is followed with the region on its left. At the end corner of an edge the
    ring turns right if the pixel ahead-right is in the region, goes straight if the pixel
    ahead-left is, else turns left. So where two pixels of one region touch diagonally (four
    boundary edges at the corner) the ring turns right: the two background sides stay separate
    rings, a hole touching its shell at a corner is its own ring (OGC-valid), and pixels of
    *different* regions never join (membership is by region, not class). Only corners (changes
    of direction) are emitted; rings are not closed here. Every ring has a left-to-right edge
    (some pixel's top edge), so scanning top edges finds them all; ``ring_area2`` is twice the
    signed area (positive: a shell).
    """
    h, w = region.shape
    seen_top = np.zeros((h, w), dtype=np.bool_)
    cap = 4 * (h + w) + 64
    xs = np.empty(cap, dtype=np.int32)
    ys = np.empty(cap, dtype=np.int32)
    rcap = 64
    ring_end = np.empty(rcap, dtype=np.int64)
    ring_region = np.empty(rcap, dtype=np.int32)
    ring_area2 = np.empty(rcap, dtype=np.int64)
    n = 0
    nr = 0
    for r0 in range(h):
        for c0 in range(w):
            k = region[r0, c0]
            if k < 0 or seen_top[r0, c0] or (r0 > 0 and region[r0 - 1, c0] == k):
                continue
            # trace from the top edge of (r0, c0): start (c0, r0), direction +x
            x, y, dx, dy = c0, r0, 1, 0
            area2 = 0
            budget = 4 * h * w + 4  # a ring has at most every pixel edge: beyond that, a bug
            while True:
                budget -= 1
                if budget < 0:
                    raise RuntimeError("polyraster: a ring did not close")
                if dx == 1:
                    seen_top[y, x] = True
                area2 += x * dy - dx * y
                vx, vy = x + dx, y + dy
                # pixels ahead-right and ahead-left of the end corner
                if _inside(region, vy + ((dy - dx) >> 1), vx + ((dx + dy) >> 1), k):
                    ndx, ndy = dy, -dx
                elif _inside(region, vy + ((dy + dx) >> 1), vx + ((dx - dy) >> 1), k):
                    ndx, ndy = dx, dy
                else:
                    ndx, ndy = -dy, dx
                if ndx != dx or ndy != dy:
                    if n == xs.shape[0]:
                        xs = _grow(xs, n)
                        ys = _grow(ys, n)
                    xs[n] = vx
                    ys[n] = vy
                    n += 1
                x, y, dx, dy = vx, vy, ndx, ndy
                if x == c0 and y == r0 and dx == 1 and dy == 0:
                    break
            if nr == ring_end.shape[0]:
                ring_end = _grow(ring_end, nr)
                ring_region = _grow(ring_region, nr)
                ring_area2 = _grow(ring_area2, nr)
            ring_end[nr] = n
            ring_region[nr] = k
            ring_area2[nr] = area2
            nr += 1
    return xs[:n].copy(), ys[:n].copy(), ring_end[:nr].copy(), ring_region[:nr].copy(), ring_area2[:nr].copy()


@compiled
def closed_coords(xs, ys, ring_start, ring_stop, order, x_off, y_off):
    """The rings in ``order``, each closed (first vertex repeated), shifted by the offsets:
    ``(coords (n, 2) float64, ring offsets)`` as ``shapely.from_ragged_array`` takes them."""
    m = order.shape[0]
    total = 0
    for i in range(m):
        total += ring_stop[order[i]] - ring_start[order[i]] + 1
    coords = np.empty((total, 2), dtype=np.float64)
    offsets = np.empty(m + 1, dtype=np.int64)
    offsets[0] = 0
    j = 0
    for i in range(m):
        a, b = ring_start[order[i]], ring_stop[order[i]]
        for q in range(a, b):
            coords[j, 0] = xs[q] + x_off
            coords[j, 1] = ys[q] + y_off
            j += 1
        coords[j, 0] = xs[a] + x_off
        coords[j, 1] = ys[a] + y_off
        j += 1
        offsets[i + 1] = j
    return coords, offsets


@compiled
def shell_bounds(xs, ys, ring_start, ring_stop, shell_ring):
    """``(xmin, ymin, xmax, ymax)`` of each polygon, from its shell ring (which holds all its extent)."""
    n = shell_ring.shape[0]
    out = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        a, b = ring_start[shell_ring[i]], ring_stop[shell_ring[i]]
        x0 = x1 = xs[a]
        y0 = y1 = ys[a]
        for q in range(a + 1, b):
            x0 = min(x0, xs[q])
            x1 = max(x1, xs[q])
            y0 = min(y0, ys[q])
            y1 = max(y1, ys[q])
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = x0, y0, x1, y1
    return out


@compiled
def _put_u32(data, o, v):
    data[o] = v & 255
    data[o + 1] = (v >> 8) & 255
    data[o + 2] = (v >> 16) & 255
    data[o + 3] = (v >> 24) & 255


@compiled
def polygons_wkb(xs, ys, ring_start, ring_stop, order, poly_rings, select, x_off, y_off, t, reverse):
    """The ``select``-ed polygons as little-endian 2-D WKB in map coordinates, straight from the rings.

    ``order[poly_rings[p]:poly_rings[p + 1]]`` are polygon ``p``'s rings, shell first; ``t`` is the
    affine ``(a, b, c, d, e, f)``: ``x = c + col * a + row * b``, ``y = f + col * d + row * e``
    (GDAL's formula, as :func:`geoseg.vector.polygonize.to_map_coords`). ``reverse`` walks every ring
    backwards (for a transform that flips orientation, so shells stay counter-clockwise).
    Returns ``(bytes, offsets, perimeter of each polygon in map units)``.
    """
    a, b, c, d, e, f = t[0], t[1], t[2], t[3], t[4], t[5]
    total = 0
    n = 0
    for p in range(select.shape[0]):
        if not select[p]:
            continue
        n += 1
        total += 9
        for i in range(poly_rings[p], poly_rings[p + 1]):
            r = order[i]
            total += 4 + 16 * (ring_stop[r] - ring_start[r] + 1)
    data = np.empty(total, dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    perimeter = np.zeros(n, dtype=np.float64)
    pt = np.empty(2, dtype=np.float64)
    pt_bytes = pt.view(np.uint8)
    o = 0
    k = 0
    offsets[0] = 0
    for p in range(select.shape[0]):
        if not select[p]:
            continue
        data[o] = 1  # little endian
        _put_u32(data, o + 1, 3)  # Polygon
        _put_u32(data, o + 5, poly_rings[p + 1] - poly_rings[p])
        o += 9
        length = 0.0
        for i in range(poly_rings[p], poly_rings[p + 1]):
            r = order[i]
            s, m = ring_start[r], ring_stop[r] - ring_start[r]
            _put_u32(data, o, m + 1)
            o += 4
            px = 0.0
            py = 0.0
            for j in range(m + 1):
                q = s + (0 if j == m else ((m - j) % m if reverse else j))
                col = xs[q] + x_off
                row = ys[q] + y_off
                mx = c + col * a + row * b
                my = f + col * d + row * e
                if j:
                    length += np.sqrt((mx - px) ** 2 + (my - py) ** 2)
                px, py = mx, my
                pt[0] = mx
                pt[1] = my
                for z in range(16):
                    data[o + z] = pt_bytes[z]
                o += 16
        perimeter[k] = length
        k += 1
        offsets[k] = o
    return data, offsets, perimeter
