"""Stratified pixel sampling: every chunk contributes in proportion to its valid pixels.

Each chunk draws its share with a generator seeded by (job seed, chunk position), so the
sample, and everything fitted on it, is the same whatever the number of workers or the
order in which chunks finish. The chunks are those of a fixed grid (:data:`SAMPLE_CHUNK`), not the
job's processing chunks, so it is the same whatever ``chunk_size`` the job asks for, too.
"""

from __future__ import annotations

import numpy as np

from geoseg.geo import Window

#: Chunk size (px) of the grid every sample is drawn on (k-means, Otsu thresholds): with the job's own
#: chunks, a job run with another ``chunk_size`` drew another sample, fitted other centroids and wrote
#: other labels. 2048 is the default ``chunk_size``, so default jobs draw the sample they always did.
SAMPLE_CHUNK = 2048


def chunk_rng(seed: int, window: Window) -> np.random.Generator:
    """A generator that depends only on the job seed and the chunk's position."""
    return np.random.default_rng([seed, window.row_off, window.col_off])


def sample_valid_pixels(
    features: np.ndarray, valid: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``round(rate × n_valid)`` valid pixels without replacement, as rows ``(n, f)``.

    >>> f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    >>> valid = np.ones((3, 4), bool); valid[0] = False
    >>> s = sample_valid_pixels(f, valid, 0.5, np.random.default_rng(0))
    >>> s.shape, bool((s[:, 0] >= 4).all())
    ((4, 2), True)
    """
    flat_valid = np.flatnonzero(valid.ravel())
    n = min(len(flat_valid), int(round(rate * len(flat_valid))))
    if n == 0:
        return np.empty((0, features.shape[0]), dtype=np.float32)
    picked = np.sort(rng.choice(flat_valid, size=n, replace=False))
    return features.reshape(features.shape[0], -1)[:, picked].T.astype(np.float32, copy=True)


def sample_windows(window: Window, block: tuple[int, int], fraction: float, rng: np.random.Generator) -> list[Window]:
    """A random subset of a chunk's internal file blocks to read for the sample.

    Reading a quarter of the blocks of every chunk keeps the sample stratified across the scene
    while costing a quarter of a full read. Chunks of one block, or untiled files, are read whole.

    >>> ws = sample_windows(Window(0, 0, 1024, 1000), (512, 512), 0.5, np.random.default_rng(0))
    >>> len(ws), all(w.height <= 512 and w.width <= 512 for w in ws)
    (2, True)
    """
    by, bx = block
    if by != bx or by < 16 or fraction >= 1:
        return [window]
    cells = [
        Window(window.row_off + r, window.col_off + c, min(by, window.height - r), min(bx, window.width - c))
        for r in range(0, window.height, by)
        for c in range(0, window.width, bx)
    ]
    k = max(1, int(round(fraction * len(cells))))
    if k >= len(cells):
        return [window]
    return [cells[i] for i in sorted(rng.choice(len(cells), size=k, replace=False))]


def sampling_rate(sample_size: int, total_pixels: int) -> float:
    """The fraction of valid pixels each chunk draws so the whole sample is about ``sample_size``."""
    return min(1.0, sample_size / max(total_pixels, 1))
