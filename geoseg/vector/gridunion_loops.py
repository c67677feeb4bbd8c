"""The one compiled loop of :mod:`geoseg.vector.gridunion`: following each ring's edges in order.

Kept apart (and at module level) so numba's on-disk cache finds it and importing gridunion stays
cheap; see :mod:`geoseg._kernels.compiled`.
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def walk_cycles(nxt):
    """The edges in ring order (each ring from its lowest edge index), and each one's ring number."""
    n = nxt.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    ring = np.empty(n, dtype=np.int64)
    k = 0
    c = 0
    for i in range(n):
        if seen[i]:
            continue
        j = i
        while not seen[j]:
            seen[j] = True
            order[k] = j
            ring[k] = c
            k += 1
            j = nxt[j]
        c += 1
    return order, ring
