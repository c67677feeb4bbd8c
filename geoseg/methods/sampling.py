"""Stratified pixel sampling: every chunk contributes in proportion to its valid pixels.

Each chunk draws its share with a generator seeded by (job seed, chunk position), so the
sample, and everything fitted on it, is the same whatever the number of workers or the
order in which chunks finish. The chunks are those of a fixed grid (:data:`SAMPLE_CHUNK`), not the
job's processing chunks, so it is the same whatever ``chunk_size`` the job asks for, too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geoseg.geo import Window

#: Chunk size (px) of the grid every sample is drawn on (k-means, Otsu thresholds): with the job's own
#: chunks, a job run with another ``chunk_size`` drew another sample, fitted other centroids and wrote
#: other labels. 2048 is the default ``chunk_size``, so default jobs draw the sample they always did.
SAMPLE_CHUNK = 2048


#: At most this fraction of each chunk's file blocks is read to draw the sample.
SAMPLE_BLOCK_FRACTION = 0.25


#: Read about this many times more pixels than are drawn, so each chunk's share is spread over several
#: blocks; a large scene then reads one block or a few per chunk instead of a quarter of it.
SAMPLE_OVERREAD = 20.0


#: At least this many of the scene's file blocks are read for the sample (all of them in a smaller scene).
#: With a quarter of each chunk's blocks, a scene of one 2048² chunk drew its sample from 4 random blocks:
#: a 200 × 200 scene, two thirds nodata, drew 4,824 or 8,576 pixels depending on the seed where its valid
#: pixels call for 6,700, and the class mix swung with which blocks were picked.
MIN_SAMPLE_BLOCKS = 64


def chunk_rng(seed: int, window: Window) -> np.random.Generator:
    """A generator that depends only on the job seed and the chunk's position."""
    return np.random.default_rng([seed, window.row_off, window.col_off])


def sample_valid_pixels(
    data: np.ndarray, valid: np.ndarray, rate: float, rng: np.random.Generator,
    compute: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Draw ``round(rate × n_valid)`` valid pixels without replacement, as rows ``(n, f)`` of
    ``compute(data)`` (default: the bands of ``data`` themselves).

    Only the drawn pixels are computed (features are per pixel, with exact float operations: the
    same values as computing the whole window): a block's share of the sample is about 1 % of its
    pixels, and computing six features on whole blocks was a quarter of the 400 Mpx sample's CPU time.

    >>> f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    >>> valid = np.ones((3, 4), bool); valid[0] = False
    >>> s = sample_valid_pixels(f, valid, 0.5, np.random.default_rng(0))
    >>> s.shape, bool((s[:, 0] >= 4).all())
    ((4, 2), True)
    """
    flat_valid = np.flatnonzero(valid.ravel())
    n = min(len(flat_valid), int(round(rate * len(flat_valid))))
    picked = np.sort(rng.choice(flat_valid, size=n, replace=False)) if n else flat_valid[:0]
    pixels = data.reshape(data.shape[0], -1)[:, picked]
    return (pixels if compute is None else compute(pixels)).T.astype(np.float32, copy=True)


def sample_windows(window: Window, block: tuple[int, int], fraction: float, rng: np.random.Generator) -> list[Window]:
    """A random subset of a chunk's internal file blocks to read for the sample.

    Reading a share of the blocks of every chunk (:func:`sample_block_fraction`) keeps the sample
    stratified across the scene at a fraction of a full read. Chunks of one block, or untiled files,
    are read whole.

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


def sample_block_fraction(rate: float, scene_blocks: int) -> float:
    """Fraction of each chunk's file blocks to read for a sampling ``rate`` in a scene of ``scene_blocks``
    file blocks: ``min(0.25, 20 × rate)``, but at least ``rate`` (the blocks read must hold the pixels
    asked for) and at least :data:`MIN_SAMPLE_BLOCKS` of the scene's blocks; at most all of them.

    ``sample_windows`` reads at least one block of every chunk, so every chunk still contributes.

    >>> sample_block_fraction(0.0005, 1600), sample_block_fraction(0.003, 256), sample_block_fraction(0.05, 16)
    (0.04, 0.25, 1.0)
    >>> sample_block_fraction(0.5, 100_000)  # a sample of half the pixels reads half the blocks
    0.5
    """
    spread = MIN_SAMPLE_BLOCKS / max(1, scene_blocks)
    return min(1.0, max(min(SAMPLE_BLOCK_FRACTION, SAMPLE_OVERREAD * rate), rate, spread))


def block_count(shape: tuple[int, int], block: tuple[int, int]) -> int:
    """How many file blocks (internal tiles) of ``block`` px cover a raster of ``shape``.

    >>> block_count((20_000, 20_000), (512, 512)), block_count((200, 200), (128, 128))
    (1600, 4)
    """
    (h, w), (by, bx) = shape, block
    return -(-h // max(1, by)) * -(-w // max(1, bx))
