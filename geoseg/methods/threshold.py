"""Index thresholding: the classic baseline (ExG + Otsu, NDVI > 0.3, NDWI water masks).

A per-pixel index (a named index, a band, or a small band expression parsed with ``ast`` and
never ``eval``'d: :mod:`geoseg.methods.indices`) is cut at fixed thresholds or at (multi-)Otsu thresholds found on a histogram
of the global stratified sample, so the thresholds, and hence the labels, do not depend on the
chunking. Optional median or Gaussian smoothing of the index is computed over a halo wide
enough that every chunk sees the same neighbourhood as the whole raster would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.geo import HaloWindow, trim_halo
from geoseg.legend import NODATA_LABEL, PALETTE, ClassInfo

# the index resolution lives in geoseg.methods.indices (networks use it too); re-exported for callers of this module
from geoseg.methods.indices import MAX_EXPRESSION as MAX_EXPRESSION
from geoseg.methods.indices import BandIndex
from geoseg.methods.indices import compile_expression as compile_expression
from geoseg.methods.indices import evaluate_expression as evaluate_expression
from geoseg.methods.indices import resolve_index as resolve_index
from geoseg.methods.predictors import PlainPredictor

#: Gaussian kernels reach ``truncate × sigma`` pixels (scipy's default); the halo follows.
GAUSS_TRUNCATE = 4.0


# --------------------------------------------------------------------------- Otsu on a histogram


def histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the finite ``values`` over their range (``InputError`` when none are finite)."""
    v = values[np.isfinite(values)].astype(np.float64)
    if v.size == 0:
        raise InputError("the index has no finite value on the sampled pixels; nothing to threshold")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    return np.histogram(v, bins=bins, range=(lo, hi))


def multi_otsu_bins(counts: np.ndarray, n_classes: int) -> tuple[int, ...]:
    """Bin positions ``k`` (class boundaries lie between bin ``k-1`` and ``k``) maximising the between-class variance.

    Dynamic programming over bins: with ``W``/``S`` the counts and value sums of a run of bins,
    the between-class variance is, up to constants, ``Σ S²/W`` over classes. Ties go to the lowest
    boundaries. ``n_classes = 2`` is Otsu's method.

    >>> multi_otsu_bins(np.array([5, 5, 0, 0, 5, 5]), 2)
    (2,)
    """
    n = len(counts)
    if not 2 <= n_classes <= n:
        raise InputError(f"multi-Otsu needs 2 to {n} classes, got {n_classes}")
    w = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    s = np.concatenate([[0.0], np.cumsum(counts * (np.arange(n) + 0.5), dtype=np.float64)])

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # classes made of bins a..b-1
        ww = w[b] - w[a]
        ss = s[b] - s[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ww > 0, ss * ss / np.where(ww > 0, ww, 1.0), 0.0)

    # best[j][e]: best score of j+1 classes over bins 0..e-1; arg[j][e]: start of the last class
    ends = np.arange(n + 1)
    best = score(np.zeros(n + 1, int), ends)
    best[0] = -np.inf
    args = []
    for _ in range(1, n_classes):
        new = np.full(n + 1, -np.inf)
        arg = np.zeros(n + 1, int)
        for e in range(2, n + 1):
            starts = np.arange(1, e)
            cand = best[starts] + score(starts, np.full(starts.shape, e))
            k = int(np.argmax(cand))  # the first maximum: lowest boundary on ties
            new[e], arg[e] = cand[k], starts[k]
        best = new
        args.append(arg)
    cuts = []
    e = n
    for arg in reversed(args):
        e = int(arg[e])
        cuts.append(e)
    return tuple(sorted(cuts))


def otsu_thresholds(values: np.ndarray, n_classes: int = 2, bins: int = 256) -> tuple[float, ...]:
    """(Multi-)Otsu thresholds of ``values``: bin edges; a pixel is above a threshold when ``> t``."""
    counts, edges = histogram(values, bins)
    return tuple(float(edges[k]) for k in multi_otsu_bins(counts, n_classes))


# --------------------------------------------------------------------------- the fitted model


@dataclass(frozen=True)
class ThresholdModel:
    """Thresholds (ascending), the smoothing, and the value filled in for nodata before smoothing."""

    index: str
    thresholds: tuple[float, ...]
    smoothing: str = "none"  # none | median | gaussian
    size: int = 3
    sigma: float = 1.0
    fill: float = 0.0

    @property
    def halo(self) -> int:
        if self.smoothing == "median":
            return self.size // 2
        if self.smoothing == "gaussian":
            return int(GAUSS_TRUNCATE * self.sigma + 0.5)
        return 0

    def classify(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class positions 0..len(thresholds) (``> t`` moves up), ``NODATA_LABEL`` where invalid or NaN."""
        ok = valid & np.isfinite(index)
        pos = np.searchsorted(np.asarray(self.thresholds, dtype=np.float32), index, side="left")
        out = pos.astype(np.uint8)
        out[~ok] = NODATA_LABEL
        return out

    def smooth(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The smoothed index; nodata and NaN are filled with ``fill`` first (same value in every chunk)."""
        if self.smoothing == "none":
            return index
        from scipy import ndimage

        x = np.where(valid & np.isfinite(index), index, np.float32(self.fill)).astype(np.float32)
        if self.smoothing == "median":
            return ndimage.median_filter(x, size=self.size, mode="reflect")
        return ndimage.gaussian_filter(x, sigma=self.sigma, mode="reflect", truncate=GAUSS_TRUNCATE)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "threshold", "index": self.index, "thresholds": list(self.thresholds),
                "smoothing": self.smoothing, "size": self.size, "sigma": self.sigma, "fill": self.fill}


def fit_threshold(
    index: str, n_classes: int, fixed: Sequence[float] | None, sample: np.ndarray | None, bins: int = 256,
    smoothing: str = "none", size: int = 3, sigma: float = 1.0,
) -> ThresholdModel:
    """Fixed thresholds as given, or (multi-)Otsu on the sample's histogram; ``fill`` = sample median."""
    values = None if sample is None else np.asarray(sample, dtype=np.float64).ravel()
    if fixed is not None:
        thresholds = tuple(sorted(float(t) for t in fixed))
    else:
        if values is None:
            raise InputError("Otsu thresholds need a pixel sample")
        thresholds = otsu_thresholds(values, n_classes, bins)
    finite = values[np.isfinite(values)] if values is not None else np.empty(0)
    fill = float(np.median(finite)) if finite.size else float(thresholds[0])
    return ThresholdModel(index, thresholds, smoothing, size, sigma, fill)


def threshold_legend(n_classes: int, classes: Sequence[Any] | None = None) -> tuple[ClassInfo, ...]:
    """The job's classes (lowest index first) or ``below``/``above`` (``level_k`` for more classes)."""
    if classes:
        if len(classes) != n_classes:
            raise InputError(f"the threshold gives {n_classes} classes but {len(classes)} are named in method.classes")
        return tuple(ClassInfo(int(c.id), str(c.name), c.color or PALETTE[k % len(PALETTE)]) for k, c in enumerate(classes))
    names = ["below", "above"] if n_classes == 2 else [f"level_{k}" for k in range(n_classes)]
    return tuple(ClassInfo(k, names[k], PALETTE[k % len(PALETTE)]) for k in range(n_classes))


@dataclass(frozen=True)
class ThresholdPredictor(PlainPredictor):
    """Index → optional smoothing over a halo → thresholds → the job's class ids."""

    model: ThresholdModel
    index: BandIndex
    classes: tuple[ClassInfo, ...]
    resources: dict[str, float] | None = None

    @property
    def halo(self) -> int:
        return self.model.halo

    def legend(self) -> tuple[ClassInfo, ...]:
        return self.classes

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        if self.model.smoothing == "none":  # per pixel: compute on the core only
            data, valid = trim_halo(data, hw), trim_halo(valid, hw)
            pos = self.model.classify(self.index.compute(data)[0], valid)
        else:
            idx = self.model.smooth(self.index.compute(data)[0], valid)
            pos = self.model.classify(trim_halo(idx, hw), trim_halo(valid, hw))
        lut = np.full(256, NODATA_LABEL, dtype=np.uint8)
        lut[: len(self.classes)] = [c.id for c in self.classes]
        return lut[pos]
