"""Figures from confusion matrices: IoU, precision, recall, F1, overall accuracy, Cohen's kappa.

One implementation for every figure geoseg prints: the evaluation of a label raster, the
validation score during training and the change report all derive theirs here, from summed
counts, so they equal what scikit-learn reports on the pixels themselves. NaN conventions: a
figure whose denominator is zero is NaN (see :mod:`geoseg.accuracy.evaluate`).
"""

from __future__ import annotations

import numpy as np


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    ok = ~np.isnan(a)
    return _div(np.where(ok, a, 0).sum(axis=axis), ok.sum(axis=axis))


def confusion_metrics(m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class and per-region figures from confusion matrices ``m`` of shape ``(G, K, K + 1)``.

    Class arrays are ``(G, K)``, region arrays ``(G,)``; see the module docstring for NaNs.

    >>> r = confusion_metrics(np.array([[[3, 1, 0], [0, 2, 0]]]))
    >>> r["iou"].round(3).tolist(), r["overall_accuracy"].tolist()
    ([[0.75, 0.667]], [0.8333333333333334])
    """
    m = np.asarray(m, dtype=np.int64)
    k = m.shape[1]
    tp = np.diagonal(m[:, :, :k], axis1=1, axis2=2)
    true = m.sum(axis=2)
    pred_all = m.sum(axis=1)  # (G, K + 1), last = unassigned
    pred = pred_all[:, :k]
    fp = pred - tp
    fn = true - tp
    n = true.sum(axis=1)
    correct = tp.sum(axis=1)
    out: dict[str, np.ndarray] = {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": true,
        "iou": _div(tp, tp + fp + fn),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "n": n,
        "correct": correct,
        "unassigned": pred_all[:, k],
        "overall_accuracy": _div(correct, n),
    }
    # Cohen's kappa, written as scikit-learn does: 1 - observed / expected disagreement.
    expected_agree = _div((true.astype(np.float64) * pred.astype(np.float64)).sum(axis=1), n)
    kappa = 1.0 - _div(n - correct, n - expected_agree)
    single = ((true == n[:, None]) & (pred == n[:, None])).any(axis=1)  # one class in both: undefined
    kappa[single | (n == 0)] = np.nan
    out["kappa"] = kappa
    for name in ("iou", "precision", "recall", "f1"):
        out[f"macro_{name}"] = _nanmean(out[name], axis=1)
    return out
