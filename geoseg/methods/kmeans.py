"""K-means land-cover clustering: fit on a pixel sample, predict chunk by chunk.

Cluster ids are put in a deterministic order (by the centroid's mean standardised value,
i.e. roughly from dark to bright), so the same data and seed always give the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import InputError
from geoseg.legend import NODATA_LABEL

if TYPE_CHECKING:
    from geoseg.methods.features import ResolvedFeatures


#: Up to this many features, OpenBLAS's sgemm (the numpy path's ``centroids @ z``) sums ``c·z`` with
#: one fused multiply-add per feature in order, which the compiled loop repeats exactly (checked
#: value by value on this project's x86-64 machines, 1-7 features, 1-250 centroids); from 8 on it
#: reassociates (and differently with more threads), so those jobs keep the numpy path and its labels.
FUSED_MAX_FEATURES = 7


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

    def predict(self, features: np.ndarray, valid: np.ndarray, rows_per_block: int = 256) -> np.ndarray:
        """Labels ``(h, w)`` uint8 for features ``(f, h, w)``; invalid pixels get ``NODATA_LABEL``.

        Standardisation is folded into the centroids (``x/s`` against ``c + m/s``) and rows are
        processed in blocks, so temporary arrays stay small whatever the chunk size.
        """
        f, h, w = features.shape
        scale = (1.0 / self.std).astype(np.float32)
        shifted = (self.centroids + self.mean / self.std).astype(np.float32)
        labels = np.empty((h, w), dtype=np.uint8)
        for r0 in range(0, h, rows_per_block):
            block = features[:, r0 : r0 + rows_per_block].reshape(f, -1) * scale[:, None]
            labels[r0 : r0 + rows_per_block] = nearest_centroid(block, shifted).reshape(-1, w)
        labels[~valid] = NODATA_LABEL
        return labels

    def predict_bands(self, data: np.ndarray, valid: np.ndarray, features: ResolvedFeatures) -> np.ndarray:
        """Labels ``(h, w)`` uint8 straight from raw bands ``(bands, h, w)``: the same labels as
        ``predict(features.compute(data), valid)``, bit for bit, in one compiled pass without float
        temporaries (:mod:`geoseg._kernels.kmeans_loops`); falls back to that numpy path for a
        feature the compiled loop does not know."""
        plan = self.fused_plan(features)
        if plan is None or data.ndim != 3 or data.shape[1:] != valid.shape:
            return self.predict(features.compute(data), valid)
        from geoseg._kernels.kmeans_loops import kmeans_labels

        scale, shifted, cc = self._folded()
        labels = np.empty(valid.shape, dtype=np.uint8)
        kmeans_labels(data, valid, *plan, scale, shifted, cc, np.uint8(NODATA_LABEL), labels)
        return labels

    def fused_plan(self, features: ResolvedFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The compiled loop's view of ``features`` (:meth:`ResolvedFeatures.fused_plan`), or ``None``
        where :meth:`predict_bands` would not give the numpy path's labels bit for bit: an index
        the loop does not know, or more than :data:`FUSED_MAX_FEATURES` features."""
        if features.n_features != self.centroids.shape[1] or features.n_features > FUSED_MAX_FEATURES:
            return None
        return features.fused_plan()

    def _folded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``1/std``, the centroids shifted by ``mean/std`` and their squared norms, with the very
        expressions of :meth:`predict` and :func:`nearest_centroid` (so both paths agree exactly)."""
        scale = (1.0 / self.std).astype(np.float32)
        shifted = (self.centroids + self.mean / self.std).astype(np.float32)
        cc = np.einsum("kf,kf->k", shifted, shifted)
        return scale, np.ascontiguousarray(shifted), np.ascontiguousarray(cc, dtype=np.float32)

    @classmethod
    def from_json(cls, data: dict) -> KMeansModel:
        """Rebuild a model saved with :meth:`to_json` (``model.json`` of a run)."""
        try:
            return cls(
                centroids=np.asarray(data["centroids"], dtype=np.float32),
                mean=np.asarray(data["mean"], dtype=np.float32),
                std=np.asarray(data["std"], dtype=np.float32),
                feature_names=tuple(data["feature_names"]),
                inertia=float(data.get("inertia", float("nan"))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a geoseg k-means model file: {exc}") from exc

    def identity(self) -> str:
        """A short digest of what assigns the clusters (centroids, standardisation, features): two label
        stores whose clusters carry the same digest number them alike. Float32 values, so a model and the
        same model saved to ``model.json`` and loaded again agree."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.centroids, self.mean, self.std):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        h.update("\0".join(self.feature_names).encode())
        return h.hexdigest()[:16]

    def to_json(self) -> dict:
        return {
            "centroids": self.centroids.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "feature_names": list(self.feature_names),
            "inertia": self.inertia,
        }


def nearest_centroid(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each column of ``z`` ``(f, n)``; ties go to the lower index.

    Uses ``|c|² - 2 c·z`` (same argmin as the full distance) and a running minimum over
    centroids, which is faster than ``argmin`` along a short first axis.

    >>> nearest_centroid(np.array([[0.0, 9.0, 4.0]]), np.array([[0.0], [10.0]]))
    array([0, 1, 0], dtype=uint8)
    """
    cc = np.einsum("kf,kf->k", centroids, centroids)
    d = centroids @ z
    d *= -2.0  # in place: exact (a power of two), so ties are the same as with the full distance
    d += cc[:, None]
    best = d[0]
    idx = np.zeros(z.shape[1], dtype=np.uint8)
    closer = np.empty(z.shape[1], dtype=bool)
    for k in range(1, centroids.shape[0]):
        np.less(d[k], best, out=closer)
        np.copyto(idx, k, where=closer)  # a masked copy: several times faster than ``idx[closer] = k``
        np.minimum(best, d[k], out=best)
    return idx


def fit_kmeans(
    sample: np.ndarray,
    n_clusters: int,
    seed: int,
    feature_names: tuple[str, ...],
    n_init: int = 4,
    max_iter: int = 300,
    threads: int = 1,
) -> KMeansModel:
    """Fit k-means on ``sample`` ``(n, f)`` (standardised first) and return the model with ordered
    centroids; :func:`geoseg.methods.kmeans_fit.kmeans` does the fitting, on ``threads`` threads."""
    from geoseg.methods.kmeans_fit import kmeans

    if not 2 <= n_clusters <= 250:
        raise InputError(f"n_clusters must be between 2 and 250, got {n_clusters}")
    if sample.shape[0] < n_clusters:
        raise InputError(
            f"only {sample.shape[0]} valid pixels were sampled, fewer than the {n_clusters} clusters asked for; "
            "the input is (almost) all nodata or the sample size is too small"
        )
    bad = ~np.isfinite(sample).all(axis=1)
    if bad.any():  # scikit-learn refused these too; the fit would turn them into NaN centroids
        raise InputError(
            f"{int(bad.sum())} sampled pixels have non-finite feature values (features {list(feature_names)}); "
            "the bands hold infinities the nodata mask does not cover"
        )
    sample = sample.astype(np.float64)
    mean = sample.mean(axis=0)
    std = sample.std(axis=0)
    std[std == 0] = 1.0
    z = (sample - mean) / std
    fit = kmeans(z, n_clusters, seed, n_init=n_init, max_iter=max_iter, threads=threads)
    order = order_centroids(fit.centers)
    return KMeansModel(
        centroids=fit.centers[order].astype(np.float32),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        feature_names=feature_names,
        inertia=fit.inertia,
    )


def order_centroids(centroids: np.ndarray) -> np.ndarray:
    """A deterministic order: by mean standardised value, ties broken lexicographically.

    >>> order_centroids(np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])).tolist()
    [1, 2, 0]
    """
    keys = [centroids[:, j] for j in range(centroids.shape[1] - 1, -1, -1)]
    return np.lexsort(keys + [np.round(centroids.mean(axis=1), 9)])
