"""The compiled k-means labelling loop: features, nearest centroid and nodata in one pass over a chunk.

Why one pass: the numpy path (:meth:`geoseg.methods.kmeans.KMeansModel.predict` on
:meth:`geoseg.methods.features.ResolvedFeatures.compute`) makes about ten float32 temporaries per
block of pixels (features, scaled features, a distance row per centroid, masks); this loop keeps a
row segment of 256 pixels in the first-level cache and writes only the labels.

It gives the numpy path's labels bit for bit, so the arithmetic is the same, operation by
operation, in float32 (no fast-math, no reassociation):

- features: the band value as float32; NDVI ``(nir - red) / (nir + red + 1e-6)``, NDWI and ExG in
  the same order of operations as :data:`geoseg.methods.features.INDICES`;
- standardisation folded into the centroids, ``z = x * (1/std)`` (one rounding);
- ``c·z`` accumulated feature by feature with a fused multiply-add from zero, as OpenBLAS's sgemm
  kernels do for the numpy path's ``centroids @ z`` (inner dimension = the few features), then
  ``-2 c·z + |c|²`` (the ``×-2`` is exact) and a running minimum with ties to the lower index.

``|c|²`` and the shifted centroids are computed once per model by the caller, with the numpy
path's own expressions. Divisions by zero give inf/NaN as numpy does (``error_model="numpy"``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from numba import types
from numba.extending import intrinsic

from geoseg._kernels.compiled import compiled

#: Index codes the loop knows (``geoseg.methods.features.FUSED_INDEX_CODES`` maps names to them).
NDVI, NDWI, EXG = 0, 1, 2

#: Pixels per row segment: 6 features + 3 work rows of float32 stay far inside a 32 KiB L1 cache.
SEGMENT = 256


@intrinsic
def fma32(typingctx, a, b, c):
    """``a * b + c`` in float32 with one rounding (LLVM's ``llvm.fma.f32``, vectorised with the loop)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@partial(compiled, error_model="numpy")
def kmeans_labels(data, valid, band_idx, index_code, index_roles, scale, centroids, cc, nodata, labels):
    """Labels ``(h, w)`` uint8 into ``labels`` for raw bands ``data`` ``(bands, h, w)``.

    ``band_idx`` (features taken from bands), ``index_code``/``index_roles`` (one row per index:
    its code and the band positions of its roles, see :func:`index_roles`), ``scale`` = 1/std per
    feature, ``centroids`` shifted by mean/std ``(k, f)``, ``cc`` = their squared norms.
    """
    h, w = valid.shape
    nb = band_idx.size
    nf = nb + index_code.size
    k = centroids.shape[0]
    feats = np.empty((nf, SEGMENT), dtype=np.float32)
    acc = np.empty(SEGMENT, dtype=np.float32)
    best = np.empty(SEGMENT, dtype=np.float32)
    idx = np.empty(SEGMENT, dtype=np.uint8)
    eps = np.float32(1e-6)
    two = np.float32(2.0)
    minus_two = np.float32(-2.0)
    for r in range(h):
        for c0 in range(0, w, SEGMENT):
            n = min(SEGMENT, w - c0)
            for j in range(nb):
                row = data[band_idx[j], r, c0 : c0 + n]
                s = scale[j]
                for p in range(n):
                    feats[j, p] = np.float32(row[p]) * s
            for i in range(index_code.size):
                j = nb + i
                s = scale[j]
                code = index_code[i]
                a = data[index_roles[i, 0], r, c0 : c0 + n]
                b = data[index_roles[i, 1], r, c0 : c0 + n]
                if code == EXG:
                    g = data[index_roles[i, 2], r, c0 : c0 + n]  # roles: red, blue, green
                    for p in range(n):
                        x, y, z = np.float32(a[p]), np.float32(b[p]), np.float32(g[p])
                        feats[j, p] = (((two * z - x) - y) / (((x + z) + y) + eps)) * s
                else:  # NDVI (nir, red) and NDWI (green, nir): (a - b) / (a + b + eps)
                    for p in range(n):
                        x, y = np.float32(a[p]), np.float32(b[p])
                        feats[j, p] = ((x - y) / ((x + y) + eps)) * s
            for q in range(k):
                for p in range(n):
                    acc[p] = np.float32(0.0)
                for j in range(nf):
                    cj = centroids[q, j]
                    for p in range(n):
                        acc[p] = fma32(cj, feats[j, p], acc[p])
                cq = cc[q]
                if q == 0:
                    for p in range(n):
                        best[p] = acc[p] * minus_two + cq
                        idx[p] = 0
                else:
                    uq = np.uint8(q)
                    for p in range(n):
                        d = acc[p] * minus_two + cq
                        old = best[p]
                        idx[p] = uq if d < old else idx[p]
                        # np.minimum: NaN wins
                        best[p] = d if (d < old or d != d) else old
            out = labels[r, c0 : c0 + n]
            ok = valid[r, c0 : c0 + n]
            for p in range(n):
                out[p] = idx[p] if ok[p] else nodata

