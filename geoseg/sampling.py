"""Stratified pixel sampling: every chunk contributes in proportion to its valid pixels.

Each chunk draws its share with a generator seeded by (job seed, chunk position), so the
sample, and everything fitted on it, is the same whatever the number of workers or the
order in which chunks finish.
"""

from __future__ import annotations

import numpy as np

from .grid import Window


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


def sampling_rate(sample_size: int, total_pixels: int) -> float:
    """The fraction of valid pixels each chunk draws so the whole sample is about ``sample_size``."""
    return min(1.0, sample_size / max(total_pixels, 1))
