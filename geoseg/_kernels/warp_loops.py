"""The compiled sampler of :mod:`geoseg.io.warp` (imported only when a window is warped: numba is slow to
import, and a job refused before its first read must not pay for it).

They live at module level, not inside a function, so that numba's on-disk cache finds them again
(:mod:`geoseg._kernels.compiled`).
"""

from __future__ import annotations

import math

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def at(lat, ri, rf, ci, cf, i, j):
    """The lattice ``lat`` interpolated at target pixel ``(i, j)`` (bilinear between lattice knots)."""
    r0, c0 = ri[i], ci[j]
    r1 = min(r0 + 1, lat.shape[0] - 1)
    c1 = min(c0 + 1, lat.shape[1] - 1)
    a = lat[r0, c0] * (1.0 - cf[j]) + lat[r0, c1] * cf[j]
    b = lat[r1, c0] * (1.0 - cf[j]) + lat[r1, c1] * cf[j]
    return a * (1.0 - rf[i]) + b * rf[i]


@compiled
def sample(src, valid, lcol, lrow, ri, rf, ci, cf, out, ok, bilinear):
    """Every band of ``src`` at the target pixels whose source coordinates the lattice gives (see
    :func:`geoseg.io.warp.sample`); ``out`` and ``ok`` are filled in place."""
    nb, H, W = src.shape
    h, w = ok.shape
    xs = np.empty(w)
    ys = np.empty(w)
    full = np.zeros(w, dtype=np.bool_)
    for i in range(h):  # row by row: coordinates once per pixel, then every band
        for j in range(w):
            x = at(lcol, ri, rf, ci, cf, i, j)
            y = at(lrow, ri, rf, ci, cf, i, j)
            xs[j] = x
            ys[j] = y
            good = x >= 0.0 and y >= 0.0 and x < W and y < H and valid[int(y), int(x)]
            ok[i, j] = good
            full[j] = False
            if good and bilinear:
                j0 = int(math.floor(x - 0.5))
                i0 = int(math.floor(y - 0.5))
                full[j] = (i0 >= 0 and j0 >= 0 and i0 + 1 < H and j0 + 1 < W and valid[i0, j0]
                           and valid[i0, j0 + 1] and valid[i0 + 1, j0] and valid[i0 + 1, j0 + 1])
        for b in range(nb):
            for j in range(w):
                if not ok[i, j]:
                    continue
                x = xs[j]
                y = ys[j]
                if not bilinear:
                    out[b, i, j] = src[b, int(y), int(x)]
                    continue
                u = x - 0.5
                v = y - 0.5
                j0 = int(math.floor(u))
                i0 = int(math.floor(v))
                fu = u - j0
                fv = v - i0
                if full[j]:  # the usual case: four valid neighbours
                    top = src[b, i0, j0] * (1.0 - fu) + src[b, i0, j0 + 1] * fu
                    bottom = src[b, i0 + 1, j0] * (1.0 - fu) + src[b, i0 + 1, j0 + 1] * fu
                    out[b, i, j] = top * (1.0 - fv) + bottom * fv
                    continue
                acc = 0.0
                wsum = 0.0
                for di in range(2):
                    ii = i0 + di
                    if ii < 0 or ii >= H:
                        continue
                    wv = fv if di else 1.0 - fv
                    for dj in range(2):
                        jj = j0 + dj
                        if jj < 0 or jj >= W or not valid[ii, jj]:
                            continue
                        wgt = wv * (fu if dj else 1.0 - fu)
                        wsum += wgt
                        acc += wgt * src[b, ii, jj]
                out[b, i, j] = acc / wsum
