"""The baselines a trained network must beat, scored on the very validation pixels the network is scored on.

* **index + Otsu**: NDVI where the bands have ``nir`` and ``red`` roles, else ExG (``red``, ``green``,
  ``blue``); one Otsu threshold (:func:`geoseg.methods.threshold.otsu_thresholds`) on the index of
  the training pixels.
* **k-means**: geoseg's k-means (:func:`geoseg.methods.kmeans.fit_kmeans`) with as many clusters as
  classes, on the training pixels' bands (standardised).

Each output (below/above the threshold, each cluster) is mapped to the reference class it overlaps
most on the *training* pixels (:func:`geoseg.accuracy.mapping.majority_mapping`), never on the
validation pixels, so with more than two classes the index baseline can name at most two of them
and an output that covers no labelled training pixel stays unassigned (wrong for every class).
The figures come from :func:`geoseg.accuracy.metrics.confusion_metrics`, as the network's do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.accuracy.mapping import majority_mapping
from geoseg.accuracy.metrics import confusion_metrics
from geoseg.errors import BandRoleError
from geoseg.legend import NODATA_LABEL
from geoseg.methods.indices import BandIndex, resolve_index
from geoseg.methods.threshold import ThresholdModel, otsu_thresholds

#: Training pixels the baselines are fitted on (a uniform subsample of the sampled windows).
MAX_FIT_PX = 100_000
#: Index tried first, then the next: NDVI needs nir + red, ExG red + green + blue.
INDEX_ORDER = ("ndvi", "exg")

#: A tile of raw bands ``(b, h, w)``, its validity ``(h, w)`` and class indexes ``(h, w)`` (255 = not scored).
Tile = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class BaselineScore:
    """One baseline's validation figures: IoU per class (NaN: class in neither reference nor output),
    their mean, the pixels scored and which class each output was mapped to (by training pixels)."""

    name: str
    iou: np.ndarray
    miou: float | None
    val_px: int
    mapping: dict[str, str | None] = field(default_factory=dict)

    def to_json(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "method": self.name, "val_miou": self.miou, "val_px": self.val_px,
            "val_iou": {n: (None if math.isnan(v) else float(v)) for n, v in zip(class_names, self.iou)},
            "mapping": self.mapping,
        }


def pick_index(band_names: Sequence[str]) -> BandIndex | None:
    """NDVI where the bands' roles allow it, else ExG, else ``None`` (no index baseline)."""
    for name in INDEX_ORDER:
        try:
            return resolve_index(name, list(band_names))
        except BandRoleError:
            continue
    return None


def fit_sample(tiles: Sequence[Tile], seed: int, max_px: int = MAX_FIT_PX) -> tuple[np.ndarray, np.ndarray]:
    """Valid training pixels ``(n, b)`` of ``tiles`` and their class indexes ``(n,)`` (255 = unlabelled),
    subsampled uniformly to at most ``max_px``."""
    xs, ys = [], []
    for img, valid, target in tiles:
        xs.append(img[:, valid].T.astype(np.float32))
        ys.append(target[valid])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_px:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_px, replace=False))
        x, y = x[keep], y[keep]
    return x, y


def _mapping(outputs: np.ndarray, y: np.ndarray, n_outputs: int, n_classes: int) -> np.ndarray:
    """Output → class index lookup (``n_classes`` = unassigned) by majority over labelled training pixels."""
    lab = (y < n_classes) & (outputs < n_outputs)
    conf = np.bincount(y[lab].astype(np.int64) * n_outputs + outputs[lab], minlength=n_classes * n_outputs)
    mapped = majority_mapping(conf.reshape(n_classes, n_outputs), range(n_classes), range(n_outputs))
    lut = np.full(256, n_classes, dtype=np.int64)
    for out, cls in mapped.items():
        lut[out] = cls
    return lut


def _score(name: str, predict: Any, lut: np.ndarray, val: Sequence[Tile], n_classes: int, n_outputs: int,
           class_names: Sequence[str], output_names: Sequence[str]) -> BaselineScore:
    """Confusion ``(K, K + 1)`` of the mapped outputs over the labelled validation pixels, and its figures."""
    conf = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    for img, valid, target in val:
        pred = lut[predict(img, valid)]  # NODATA_LABEL and unmapped outputs -> unassigned
        m = target < n_classes
        conf += np.bincount(target[m].astype(np.int64) * (n_classes + 1) + pred[m],
                            minlength=n_classes * (n_classes + 1)).reshape(n_classes, n_classes + 1)
    figures = confusion_metrics(conf[None])
    miou = float(figures["macro_iou"][0])
    mapping = {o: (class_names[int(lut[i])] if lut[i] < n_classes else None) for i, o in enumerate(output_names)}
    return BaselineScore(name, figures["iou"][0], None if math.isnan(miou) else miou, int(conf.sum()), mapping)


def index_otsu_baseline(band_names: Sequence[str], fit: tuple[np.ndarray, np.ndarray], val: Sequence[Tile],
                        class_names: Sequence[str]) -> BaselineScore | None:
    """Index + Otsu fitted on the training sample ``fit``, scored on ``val``; ``None`` without an index's bands."""
    index = pick_index(band_names)
    if index is None:
        return None
    x, y = fit
    k = len(class_names)
    values = index.compute(x.T[:, :, None])[0, :, 0]
    model = ThresholdModel(index.text, otsu_thresholds(values, 2))
    train_out = model.classify(values, np.ones(values.shape, bool)).astype(np.int64)
    lut = _mapping(train_out, y, 2, k)

    def predict(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return model.classify(index.compute(img)[0], valid)

    return _score(f"{index.text}+otsu", predict, lut, val, k, 2, class_names, ["below", "above"])


def kmeans_baseline(band_names: Sequence[str], fit: tuple[np.ndarray, np.ndarray], val: Sequence[Tile],
                    class_names: Sequence[str], seed: int = 0) -> BaselineScore:
    """K-means (clusters = classes) on the training sample's bands, mapped by majority, scored on ``val``."""
    from geoseg.methods.kmeans import fit_kmeans

    x, y = fit
    k = len(class_names)
    model = fit_kmeans(x, k, seed, tuple(band_names))
    train_out = model.predict(x.T[:, :, None], np.ones((len(x), 1), bool))[:, 0].astype(np.int64)
    lut = _mapping(train_out, y, k, k)
    lut[NODATA_LABEL] = k

    def predict(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return model.predict(img.astype(np.float32), valid)

    return _score("kmeans", predict, lut, val, k, k, class_names, [f"cluster {i}" for i in range(k)])


def standardised(tile: Tile, mean: np.ndarray, std: np.ndarray) -> Tile:
    """The tile with its bands standardised by ``mean``/``std`` (its scene's: the bands' part of the network
    channels' statistics), for the k-means a network trained with ``normalisation: scene`` is compared with."""
    img, valid, target = tile
    n = img.shape[0]
    m, s = np.asarray(mean, np.float32)[:n, None, None], np.asarray(std, np.float32)[:n, None, None]
    return ((img.astype(np.float32) - m) / s), valid, target


def kmeans_per_scene_baseline(band_names: Sequence[str], train_tiles: Sequence[Tile], val: Sequence[Tile],
                              class_names: Sequence[str], seed: int = 0) -> BaselineScore:
    """K-means on tiles already standardised by their own scene's statistics (:func:`standardised`): the
    baseline beside a network that sees every scene so."""
    score = kmeans_baseline(band_names, fit_sample(train_tiles, seed), val, class_names, seed)
    score.name = "kmeans per scene"
    return score


def score_baselines(band_names: Sequence[str], train_tiles: Sequence[Tile], val: Sequence[Tile],
                    class_names: Sequence[str], seed: int = 0) -> list[BaselineScore]:
    """Index + Otsu (where the bands allow) and k-means, fitted on ``train_tiles``, scored on ``val``."""
    fit = fit_sample(train_tiles, seed)
    out = [index_otsu_baseline(band_names, fit, val, class_names), kmeans_baseline(band_names, fit, val, class_names,
                                                                                   seed)]
    return [b for b in out if b is not None]
