"""The compiled passes of the k-means fit (:mod:`geoseg.methods.kmeans_fit`): a Lloyd step over a
run of blocks of sample pixels (one run per thread), and the inertia.

Why compiled: a Lloyd step is, per pixel, ``k`` dot products of ``f`` features, an argmin and ``f``
additions; numpy would make a ``(k, n)`` distance matrix and a masked sum per cluster for each step.
The distance is ``|c|² - 2 c·z`` (the pixel's own norm does not change the argmin), ties go to
the lower centroid, as scikit-learn's Lloyd loop does.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


def _lloyd_blocks(z, centers, labels, sums, counts, first, last, block):
    """Assign the pixels of blocks ``first:last`` (``block`` pixels each) of ``z`` ``(n, f)`` to their
    nearest centroid (``labels``) and write each block's cluster sums and counts into ``sums[b]``
    ``(k, f)`` and ``counts[b]`` ``(k,)``.

    Each block's sums are kept in arrays of this call and written once: blocks run in parallel write
    neighbouring rows of ``sums``, and adding there pixel by pixel made the threads fight over shared
    cache lines (two threads were no faster than one).
    """
    for b in range(first, last):
        _one_block(z, centers, labels, sums[b], counts[b], b * block, min((b + 1) * block, z.shape[0]))


def _one_block(z, centers, labels, sums, counts, start, stop):
    """One block of :func:`_lloyd_blocks`: pixels ``start:stop``, their sums into ``sums`` and ``counts``."""
    k, f = centers.shape
    cc = np.empty(k)
    for j in range(k):
        s = 0.0
        for q in range(f):
            s += centers[j, q] * centers[j, q]
        cc[j] = s
    acc = np.zeros((k, f))
    n = np.zeros(k)
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
        n[arg] += 1.0
        for q in range(f):
            acc[arg, q] += z[i, q]
    for j in range(k):  # element by element: a slice assignment costs seconds of compile time
        counts[j] = n[j]
        for q in range(f):
            sums[j, q] = acc[j, q]


def _inertia(z, centers, labels):
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


_one_block = compiled(_one_block)
lloyd_blocks = compiled(_lloyd_blocks)
inertia = compiled(_inertia)
