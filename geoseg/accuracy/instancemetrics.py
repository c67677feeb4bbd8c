"""Instance and panoptic accuracy from overlap counts: PQ, SQ, RQ, F1, AP50 and AP@[.5:.95], count error.

Why from overlaps: an instance raster is scored chunk by chunk like the semantic one; each chunk
returns the pixels shared by every (predicted, reference) instance pair it holds and the pixels of
each instance (:func:`geoseg.accuracy.objectstats.overlap_pairs`), and the client sums them. Every
figure below is a function of those sums, the instances' classes and (for AP) the predicted scores.

Definitions (the ones users compare with):

* **Panoptic quality** (Kirillov et al. 2019): per class, a predicted and a reference instance match
  when their IoU is *above* 0.5, one to one: unique by themselves between two non-overlapping sets, but
  reference features may overlap (each is burnt alone), so a prediction above 0.5 with two of them
  (a crown annotated twice) takes the one of highest IoU and the other is a miss; ``PQ = Σ IoU(matches) / (TP + FP/2 + FN/2)``,
  ``SQ = Σ IoU / TP`` (mean IoU of the matches), ``RQ = TP / (TP + FP/2 + FN/2)`` (the F1 of the
  matching), so ``PQ = SQ × RQ``. No void or crowd regions: every pixel of the reference counts.
* **Average precision** (COCO): per class and IoU threshold t ∈ {0.50, 0.55, …, 0.95}, predictions
  in descending score order each take the unmatched reference of the same class with the highest
  IoU ≥ t; precision is made monotone and sampled at 101 recall points. AP50 is t = 0.5; AP is the
  mean over the ten thresholds. Unlike COCO's default there is no cap on detections per image and
  no area ranges: a scene holds thousands of objects.
* **Count error**: predicted minus reference instances, and that over the reference count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: IoU thresholds of COCO's AP@[.5:.95].
COCO_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
#: Recall points at which COCO samples the precision envelope.
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Overlaps:
    """Summed overlaps of two instance sets: pairs ``(pred, ref)`` (1-based ids) and their shared pixels,
    the pixels and class of every instance (index = id - 1), and each predicted instance's score."""

    pred: np.ndarray
    ref: np.ndarray
    inter: np.ndarray
    pred_size: np.ndarray
    ref_size: np.ndarray
    pred_cls: np.ndarray
    ref_cls: np.ndarray
    pred_score: np.ndarray | None = None

    def iou(self) -> np.ndarray:
        """IoU of every overlapping pair."""
        union = self.pred_size[self.pred - 1] + self.ref_size[self.ref - 1] - self.inter
        return self.inter / union

    def same_class(self) -> np.ndarray:
        return self.pred_cls[self.pred - 1] == self.ref_cls[self.ref - 1]


@dataclass(frozen=True)
class ClassInstanceScore:
    """Instance accuracy of one class."""

    class_id: int
    n_pred: int
    n_ref: int
    tp: int
    iou_sum: float
    ap50: float
    ap: float

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp

    @property
    def sq(self) -> float:
        return self.iou_sum / self.tp if self.tp else math.nan

    @property
    def rq(self) -> float:
        d = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.tp / d if d else math.nan

    @property
    def pq(self) -> float:
        d = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.iou_sum / d if d else math.nan

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else math.nan

    @property
    def recall(self) -> float:
        return self.tp / self.n_ref if self.n_ref else math.nan

    @property
    def f1(self) -> float:
        """F1 of the matching at IoU > 0.5 (equal to RQ)."""
        return self.rq

    @property
    def count_error(self) -> int:
        return self.n_pred - self.n_ref

    @property
    def relative_count_error(self) -> float:
        return self.count_error / self.n_ref if self.n_ref else math.nan


def panoptic_matches(ov: Overlaps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched ``(pred ids, ref ids, IoU)``: same class and IoU > 0.5, each instance at most once.

    Why one to one: predictions never overlap, so a reference instance has at most one prediction
    above 0.5; overlapping reference features can give a prediction two. It takes the one of highest
    IoU (ties: the lower reference id), the maximum-IoU matching, and the other stays unmatched.

    >>> ov = Overlaps(np.array([1, 1, 2]), np.array([1, 2, 2]), np.array([8, 1, 3]), np.array([9, 3]),
    ...               np.array([8, 4]), np.array([1, 1]), np.array([1, 1]))
    >>> [x.tolist() for x in panoptic_matches(ov)]
    [[1, 2], [1, 2], [0.8888888888888888, 0.75]]
    >>> twice = Overlaps(np.array([1, 1]), np.array([1, 2]), np.array([10, 9]), np.array([10]),
    ...                  np.array([10, 10]), np.array([1]), np.array([1, 1]))
    >>> [x.tolist() for x in panoptic_matches(twice)]
    [[1], [1], [1.0]]
    """
    iou = ov.iou()
    keep = (iou > 0.5) & ov.same_class()
    pred, ref, iou = ov.pred[keep], ov.ref[keep], iou[keep]
    order = np.lexsort((ref, pred, -iou))  # best IoU first
    pred, ref, iou = pred[order], ref[order], iou[order]
    _, first_of_pred = np.unique(pred, return_index=True)
    once = np.zeros(pred.size, bool)
    once[first_of_pred] = True  # each prediction's best; a reference has at most one prediction above 0.5
    _, first_of_ref = np.unique(ref[once], return_index=True)
    chosen = np.flatnonzero(once)[first_of_ref]
    chosen.sort()
    return pred[chosen], ref[chosen], iou[chosen]


def average_precision(ov: Overlaps, class_id: int, threshold: float) -> float:
    """COCO average precision of one class at one IoU threshold (NaN without reference instances)."""
    pred_ids = np.flatnonzero(ov.pred_cls == class_id) + 1
    n_ref = int(np.count_nonzero(ov.ref_cls == class_id))
    if n_ref == 0:
        return math.nan
    if pred_ids.size == 0:
        return 0.0
    scores = ov.pred_score if ov.pred_score is not None else np.ones(ov.pred_cls.size)
    order = pred_ids[np.argsort(-scores[pred_ids - 1], kind="stable")]
    iou = ov.iou()
    same = ov.same_class() & (ov.ref_cls[ov.ref - 1] == class_id) & (iou >= threshold)
    cand_pred, cand_ref, cand_iou = ov.pred[same], ov.ref[same], iou[same]
    by_pred: dict[int, list[tuple[int, float]]] = {}
    for i in np.lexsort((cand_ref, cand_pred)).tolist():  # each prediction's candidates by reference id
        by_pred.setdefault(int(cand_pred[i]), []).append((int(cand_ref[i]), float(cand_iou[i])))
    taken: set[int] = set()
    tp = np.zeros(order.size, bool)
    for k, p in enumerate(order.tolist()):
        best, best_iou = -1, -1.0
        for r, v in by_pred.get(p, ()):  # the unmatched reference with the highest IoU; ties: the last (COCO's loop)
            if r not in taken and v >= best_iou:
                best, best_iou = r, v
        if best > 0:
            taken.add(best)
            tp[k] = True
    ctp = np.cumsum(tp)
    recall = ctp / n_ref
    precision = ctp / np.arange(1, order.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, _RECALL_POINTS, side="left")
    sampled = np.where(at < envelope.size, envelope[np.minimum(at, envelope.size - 1)], 0.0)
    return float(sampled.mean())


def score_instances(ov: Overlaps, classes: Sequence[int] | None = None) -> list[ClassInstanceScore]:
    """Per-class PQ/SQ/RQ/F1, AP50, AP@[.5:.95] and counts (``classes``: default every class seen)."""
    if classes is None:
        classes = sorted(set(ov.pred_cls.tolist()) | set(ov.ref_cls.tolist()))
    mp, _, miou = panoptic_matches(ov)
    out = []
    for c in classes:
        mine = ov.pred_cls[mp - 1] == c if mp.size else np.zeros(0, bool)
        aps = [average_precision(ov, c, t) for t in COCO_THRESHOLDS]
        out.append(ClassInstanceScore(
            class_id=int(c), n_pred=int(np.count_nonzero(ov.pred_cls == c)),
            n_ref=int(np.count_nonzero(ov.ref_cls == c)), tp=int(np.count_nonzero(mine)),
            iou_sum=float(miou[mine].sum()), ap50=aps[0], ap=float(np.mean(aps)) if not math.isnan(aps[0]) else math.nan,
        ))
    return out


def overlaps_of_rasters(pred: np.ndarray, ref: np.ndarray, pred_cls: np.ndarray, ref_cls: np.ndarray,
                        pred_score: np.ndarray | None = None) -> Overlaps:
    """:class:`Overlaps` of two whole instance rasters (ids 1..n, 0 = none) held in memory (small cases, tests)."""
    from geoseg.accuracy.objectstats import overlap_pairs

    p, r, inter = overlap_pairs(pred, ref)
    ps = np.bincount(pred.ravel().astype(np.int64), minlength=pred_cls.size + 1)[1:]
    rs = np.bincount(ref.ravel().astype(np.int64), minlength=ref_cls.size + 1)[1:]
    return Overlaps(p, r, inter, ps, rs, np.asarray(pred_cls), np.asarray(ref_cls), pred_score)
