"""The 256-bin histogram of a label chunk, the one number set each labelling task sends back.

Why compiled: ``np.bincount`` first converts the uint8 labels to 64-bit integers and scans them
for their range, about 10 ms per 4 Mpx chunk; this loop counts the bytes where they lie (2 ms).
"""

from __future__ import annotations

import numpy as np

from geoseg._kernels.compiled import compiled


@compiled
def _count4(flat, out4):
    # Four interleaved sub-histograms: on blocky label maps consecutive pixels hit the same bin,
    # and one histogram would wait on its own previous increment.
    n = flat.size
    for start in range(0, n - n % 4, 4):
        out4[0, flat[start]] += 1
        out4[1, flat[start + 1]] += 1
        out4[2, flat[start + 2]] += 1
        out4[3, flat[start + 3]] += 1
    for i in range(n - n % 4, n):
        out4[0, flat[i]] += 1


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Counts of each value 0-255 in ``labels``, as ``np.bincount(labels.ravel(), minlength=256)``.

    >>> label_counts(np.array([[0, 3], [3, 255]], dtype=np.uint8))[[0, 3, 255]].tolist()
    [1, 2, 1]
    """
    if labels.dtype != np.uint8:
        return np.bincount(labels.ravel(), minlength=256)
    out4 = np.zeros((4, 256), dtype=np.int64)
    _count4(np.ascontiguousarray(labels).reshape(-1), out4)
    return out4.sum(axis=0)
