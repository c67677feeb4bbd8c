"""Connected components of a graph given as pairs of node ids (the seam merger's piece groups).

Why not ``scipy.sparse.csgraph.connected_components``: the merger is the only user of scipy in a
vectorise run, and importing it costs ~20 MiB of resident memory in every process that merges;
a union-find over the pairs is a few lines, linear in them, and needs no sparse matrix.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def find_root(parent, i):
    """The root of ``i`` in a union-find forest, halving the path on the way (also used by
    :mod:`geoseg.vector.polyraster_loops`)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@compiled
def _components(n, a, b):
    parent = np.arange(n)
    for k in range(a.size):
        ra, rb = find_root(parent, a[k]), find_root(parent, b[k])
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for i in range(n):
        parent[i] = find_root(parent, i)
    return parent


def pair_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``n`` nodes, the smallest node id of its component (pairs ``a[k]``–``b[k]`` are edges).

    >>> pair_components(5, np.array([3, 1]), np.array([4, 3])).tolist()
    [0, 1, 2, 1, 1]
    """
    a = np.ascontiguousarray(a, dtype=np.int64)
    b = np.ascontiguousarray(b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError("a and b must have the same length")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    return _components(np.int64(n), a, b)
