"""The compiled passes of the k-means fit (:mod:`geoseg.methods.kmeans_fit`): one Lloyd step over a
block of sample pixels, and the inertia.

Why compiled: a Lloyd step is, per pixel, ``k`` dot products of ``f`` features, an argmin and ``f``
additions; numpy would make a ``(k, n)`` distance matrix and a masked sum per cluster for each step.
The distance is ``|c|² - 2 c·z`` (the pixel's own norm does not change the argmin), ties go to
the lower centroid, as scikit-learn's Lloyd loop does.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


def _lloyd_block(z, centers, labels, sums, counts, start, stop):  # noqa: ANN001, ANN202
    """Assign pixels ``start:stop`` of ``z`` ``(n, f)`` to their nearest centroid (``labels``) and
    add them to their cluster's ``sums`` ``(k, f)`` and ``counts`` ``(k,)`` (zeroed here)."""
    k, f = centers.shape
    cc = np.empty(k)
    for j in range(k):
        s = 0.0
        for q in range(f):
            s += centers[j, q] * centers[j, q]
        cc[j] = s
    sums[:] = 0.0
    counts[:] = 0.0
    for i in range(start, stop):
        best = np.inf
        arg = 0
        for j in range(k):
            dot = 0.0
            for q in range(f):
                dot += z[i, q] * centers[j, q]
            d = cc[j] - 2.0 * dot
            if d < best:
                best = d
                arg = j
        labels[i] = arg
        counts[arg] += 1.0
        for q in range(f):
            sums[arg, q] += z[i, q]


def _inertia(z, centers, labels):  # noqa: ANN001, ANN202
    """Sum of squared distances of the pixels of ``z`` ``(n, f)`` to their cluster's centroid."""
    n, f = z.shape
    total = 0.0
    for i in range(n):
        j = labels[i]
        s = 0.0
        for q in range(f):
            d = z[i, q] - centers[j, q]
            s += d * d
        total += s
    return total


lloyd_block = compiled(_lloyd_block)
inertia = compiled(_inertia)
