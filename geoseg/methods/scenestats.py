"""Per-scene input statistics: what a network trained with ``normalisation: scene`` is normalised by.

Why: the same fields on another date are another image. Haze, sun elevation and phenology move every band
(on the Slovenia sample the test date's NIR is ~20 % brighter than the training dates'), so a network
normalised by its training set's mean and std meets values it never learned. Standardising each scene by
its own statistics takes that shift out, at a known price: the statistics follow the scene's class mix, so
a scene that is nearly all one class (a crop of a single field) is standardised differently from the large
scenes the network was trained on (README, limits).

The statistics are the mean and std of each network channel (the bands, then the index channels computed
from the raw bands) over a stratified sample of the scene's valid pixels: :data:`SCENE_SAMPLE_PX` pixels
drawn with the seeded, chunk-size-independent sampler that k-means uses (:mod:`geoseg.methods.sampling`),
so a run and its resume get the same numbers. A scene with fewer pixels than that is taken whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.geo import GeoGrid, Window
    from geoseg.methods.indices import BandIndex

#: Pixels of the scene sample (the std of a band's mean over it is ~0.2 % of the band's std).
SCENE_SAMPLE_PX = 200_000
#: Seed of the scene sample: fixed, so the same scene always gets the same statistics.
SCENE_SEED = 0


@dataclass(frozen=True)
class NetworkChannels:
    """The raw network channels of a pixel: the ``n_bands`` bands, then ``indices`` computed from them.

    Has the feature interface the sampler draws with (``compute`` and ``n_features``); small and picklable.
    """

    n_bands: int
    indices: tuple[BandIndex, ...] = ()

    @property
    def n_features(self) -> int:
        return self.n_bands + len(self.indices)

    def compute(self, data: np.ndarray) -> np.ndarray:
        """Channels ``(n_features, h, w)`` float32 from raw bands ``(bands, h, w)`` (an index may be NaN at 0/0)."""
        parts = [data.astype(np.float32, copy=False)]
        with np.errstate(invalid="ignore", divide="ignore"):
            parts += [index.compute(data).astype(np.float32, copy=False) for index in self.indices]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def mean_std(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float32) from per-channel sums, sums of squares and counts; the std is floored at
    1e-6 × max(|mean|, 1) so a constant channel normalises to 0 instead of dividing by 0.

    >>> m, s = mean_std(np.array([6.0]), np.array([14.0]), np.array([3]))
    >>> float(m[0]), round(float(s[0]), 4)
    (2.0, 0.8165)
    """
    n = np.maximum(count, 1)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    std = np.maximum(std, 1e-6 * np.maximum(np.abs(mean), 1.0))
    return mean.astype(np.float32), std.astype(np.float32)


def channel_statistics(sample: np.ndarray, names: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of a pixel sample ``(n, channels)`` over its finite values.

    Refuses (``InputError``) a sample in which a channel has no finite value (an all-nodata scene, an index
    that is 0/0 everywhere): there is nothing to normalise by.
    """
    x = sample.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    count = finite.sum(axis=0)
    if len(count) and (count == 0).any():
        k = int(np.flatnonzero(count == 0)[0])
        what = f"channel {names[k]!r}" if k < len(names) else f"channel {k}"
        raise InputError(f"the scene has no valid pixel with a finite {what}; nothing to normalise it by")
    x = np.where(finite, x, 0.0)
    return mean_std(x.sum(axis=0), (x * x).sum(axis=0), count)


def sample_file_channels(
    read: Callable[[Window], tuple[np.ndarray, np.ndarray]], grid: GeoGrid, channels: NetworkChannels,
    sample_size: int = SCENE_SAMPLE_PX, seed: int = SCENE_SEED,
) -> np.ndarray:
    """The scene sample ``(n, channels)`` of an image read in this process (a training image), chunk by chunk
    of the sampling grid: memory follows the chunk. ``read(window)`` gives raw bands and validity."""
    from geoseg.methods.sampling import SAMPLE_CHUNK, chunk_rng, sample_valid_pixels, sampling_rate

    rate = sampling_rate(sample_size, grid.height * grid.width)
    parts = [np.empty((0, channels.n_features), np.float32)]
    for window in grid.tiles(SAMPLE_CHUNK).windows():
        data, valid = read(window)
        parts.append(sample_valid_pixels(data, valid, rate, chunk_rng(seed, window), channels.compute))
    return np.concatenate(parts)


def image_statistics(image: np.ndarray, valid: np.ndarray, channels: NetworkChannels) -> tuple[np.ndarray, np.ndarray]:
    """The statistics of one in-memory image taken as the whole scene (a notebook's array): every valid pixel."""
    return channel_statistics(channels.compute(image)[:, valid].T)
