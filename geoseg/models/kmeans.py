"""K-means land-cover clustering: fit on a pixel sample, predict chunk by chunk.

Cluster ids are put in a deterministic order (by the centroid's mean standardised value,
i.e. roughly from dark to bright), so the same data and seed always give the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..classes import NODATA_LABEL
from ..errors import InputError
from ..features import standardise


@dataclass(frozen=True)
class KMeansModel:
    """Fitted centroids in standardised feature space, plus the standardisation itself."""

    centroids: np.ndarray  # (k, f), ordered
    mean: np.ndarray  # (f,)
    std: np.ndarray  # (f,)
    feature_names: tuple[str, ...]
    inertia: float

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def predict(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Labels ``(h, w)`` uint8 for features ``(f, h, w)``; invalid pixels get ``NODATA_LABEL``."""
        f, h, w = features.shape
        z = standardise(features, self.mean, self.std).reshape(f, -1)
        labels = np.full(h * w, NODATA_LABEL, dtype=np.uint8)
        idx = np.flatnonzero(valid.ravel())
        if idx.size:
            labels[idx] = nearest_centroid(z[:, idx], self.centroids)
        return labels.reshape(h, w)

    def to_json(self) -> dict:
        return {
            "centroids": self.centroids.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "feature_names": list(self.feature_names),
            "inertia": self.inertia,
        }


def nearest_centroid(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each column of ``z`` ``(f, n)``.

    Uses ``|c|² - 2 c·z``, which gives the same argmin as the full distance without
    forming an ``(n, k, f)`` array.

    >>> nearest_centroid(np.array([[0.0, 9.0, 4.0]]), np.array([[0.0], [10.0]]))
    array([0, 1, 0], dtype=uint8)
    """
    cc = np.einsum("kf,kf->k", centroids, centroids)[:, None]
    d = cc - 2.0 * (centroids @ z)
    return np.argmin(d, axis=0).astype(np.uint8)


def fit_kmeans(
    sample: np.ndarray,
    n_clusters: int,
    seed: int,
    feature_names: tuple[str, ...],
    n_init: int = 4,
    max_iter: int = 300,
) -> KMeansModel:
    """Fit k-means on ``sample`` ``(n, f)`` and return the model with ordered centroids."""
    from sklearn.cluster import KMeans

    if not 2 <= n_clusters <= 250:
        raise InputError(f"n_clusters must be between 2 and 250, got {n_clusters}")
    if sample.shape[0] < n_clusters:
        raise InputError(
            f"only {sample.shape[0]} valid pixels were sampled, fewer than the {n_clusters} clusters asked for; "
            "the input is (almost) all nodata or the sample size is too small"
        )
    sample = sample.astype(np.float64)
    mean = sample.mean(axis=0)
    std = sample.std(axis=0)
    std[std == 0] = 1.0
    z = (sample - mean) / std
    km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    km.fit(z)
    order = order_centroids(km.cluster_centers_)
    return KMeansModel(
        centroids=km.cluster_centers_[order].astype(np.float32),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        feature_names=feature_names,
        inertia=float(km.inertia_),
    )


def order_centroids(centroids: np.ndarray) -> np.ndarray:
    """A deterministic order: by mean standardised value, ties broken lexicographically.

    >>> order_centroids(np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])).tolist()
    [1, 2, 0]
    """
    keys = [centroids[:, j] for j in range(centroids.shape[1] - 1, -1, -1)]
    return np.lexsort(keys + [np.round(centroids.mean(axis=1), 9)])
