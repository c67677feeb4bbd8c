"""PQ, SQ, RQ, F1, AP50 and AP@[.5:.95] against a hand-made case and an independent implementation (pycocotools)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoseg.accuracy.instancemetrics import COCO_THRESHOLDS, overlaps_of_rasters, score_instances


def _hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = np.zeros((10, 10), np.int64)
    ref[0:4, 0:4], ref[0:4, 5:9], ref[6:10, 0:4] = 1, 2, 3  # A, B, C: 16 px each
    pred = np.zeros((10, 10), np.int64)
    pred[0:4, 0:3] = 1   # 12 px inside A: IoU 0.75
    pred[0:4, 5:7] = 2   # 8 px inside B: IoU exactly 0.5 (not a panoptic match, an AP50 hit)
    pred[6:10, 0:5] = 3  # 20 px over C: IoU 0.8
    pred[6:10, 6:10] = 4  # on nothing
    return pred, ref, np.array([0.9, 0.8, 0.3, 0.95])


def test_hand_made_case() -> None:
    pred, ref, score = _hand_case()
    s = score_instances(overlaps_of_rasters(pred, ref, np.ones(4, int), np.ones(3, int), score))[0]
    assert (s.n_pred, s.n_ref, s.tp, s.fp, s.fn) == (4, 3, 2, 2, 1)
    assert s.sq == pytest.approx((0.75 + 0.8) / 2)
    assert s.rq == pytest.approx(2 / 3.5) and s.f1 == s.rq
    assert s.pq == pytest.approx(1.55 / 3.5) and s.pq == pytest.approx(s.sq * s.rq)
    assert s.precision == 0.5 and s.recall == pytest.approx(2 / 3)
    assert (s.count_error, s.relative_count_error) == (1, pytest.approx(1 / 3))
    # AP50: by score 4 (miss), 1, 2, 3 (hits): precision 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1 -> envelope 0.75
    assert s.ap50 == pytest.approx(0.75)
    # from IoU 0.55 to 0.75 (five thresholds) only 1 and 3 hit: envelope 0.5 up to recall 2/3
    # (67 of COCO's 101 recall points), then 0
    ap75 = 0.5 * 67 / 101
    # at 0.8 only 3 hits (after three misses): precision 1/4 up to recall 1/3 (34 points); above, none
    ap80 = 0.25 * 34 / 101
    # thresholds 0.50 | 0.55 0.60 0.65 0.70 0.75 | 0.80 | 0.85 0.90 0.95
    assert s.ap == pytest.approx((0.75 + 5 * ap75 + ap80 + 3 * 0.0) / 10)


def test_classes_are_scored_apart() -> None:
    pred, ref, score = _hand_case()
    # the same shapes, but prediction 3 calls C's class wrong: C becomes a miss, 3 a false positive
    per = score_instances(overlaps_of_rasters(pred, ref, np.array([1, 1, 2, 1]), np.array([1, 1, 1]), score))
    one, two = per
    assert (one.class_id, one.tp, one.fn, one.n_pred) == (1, 1, 2, 3)
    assert (two.class_id, two.tp, two.n_ref) == (2, 0, 0) and math.isnan(two.ap50)


def _coco_ap(pred: np.ndarray, ref: np.ndarray, pred_cls: np.ndarray, ref_cls: np.ndarray,
             score: np.ndarray) -> dict[int, tuple[float, float]]:
    """AP50 and AP per class by pycocotools (no detection cap, one area range)."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m: np.ndarray) -> dict:
        r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    cats = sorted(set(pred_cls.tolist()) | set(ref_cls.tolist()))
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": ref.shape[0], "width": ref.shape[1]}],
        "categories": [{"id": int(c)} for c in cats],
        "annotations": [{"id": i, "image_id": 1, "category_id": int(ref_cls[i - 1]), "iscrowd": 0,
                         "area": float((ref == i).sum()), "segmentation": rle(ref == i), "bbox": [0, 0, 1, 1]}
                        for i in range(1, ref_cls.size + 1)],
    }
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": int(pred_cls[i - 1]), "segmentation": rle(pred == i),
                      "score": float(score[i - 1])} for i in range(1, pred_cls.size + 1)])
    ev = COCOeval(gt, dt, "segm")
    ev.params.maxDets = [1, 10, 100_000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (thresholds, recall points, classes)
    out = {}
    for k, c in enumerate(cats):
        p = prec[:, :, k]
        if (p > -1).any():
            out[int(c)] = (float(p[0].mean()), float(p[p > -1].mean()))
    return out


def _random_instances(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.int64)
    for i in range(1, n + 1):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 12, size=2)
        out[r:r + h, c:c + w] = i
    _, inv = np.unique(out, return_inverse=True)  # ids of instances painted over entirely disappear
    return inv.reshape(shape)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap_equals_pycocotools(seed: int) -> None:
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(seed)
    ref = _random_instances(rng, 40, (64, 64))
    # predictions: the references moved by a pixel or two, some dropped, some invented
    pred = np.zeros_like(ref)
    for i in range(1, int(ref.max()) + 1):
        if rng.random() < 0.8:
            dr, dc = rng.integers(-2, 3, size=2)
            pred[np.roll(np.roll(ref == i, dr, 0), dc, 1)] = i
    pred[rng.integers(0, 50):][:5, :5] = 9999
    _, inv = np.unique(pred, return_inverse=True)
    pred = inv.reshape(ref.shape)
    ref_cls = rng.integers(1, 3, size=int(ref.max()))
    pred_cls = rng.integers(1, 3, size=int(pred.max()))
    score = rng.random(int(pred.max()))
    ours = {s.class_id: (s.ap50, s.ap) for s in
            score_instances(overlaps_of_rasters(pred, ref, pred_cls, ref_cls, score)) if not math.isnan(s.ap50)}
    theirs = _coco_ap(pred, ref, pred_cls, ref_cls, score)
    assert ours.keys() == theirs.keys()
    for c in ours:
        assert ours[c] == pytest.approx(theirs[c], abs=1e-12)
    assert len(COCO_THRESHOLDS) == 10


def _brute_force_pq(pred: np.ndarray, ref: np.ndarray, pred_cls: np.ndarray, ref_cls: np.ndarray, c: int) -> tuple:
    """PQ, SQ, RQ of class ``c`` straight from the masks: every pair's IoU by set arithmetic."""
    ious = []
    matched_p, matched_r = set(), set()
    for i in range(1, pred_cls.size + 1):
        for j in range(1, ref_cls.size + 1):
            if pred_cls[i - 1] != c or ref_cls[j - 1] != c:
                continue
            a, b = pred == i, ref == j
            iou = (a & b).sum() / (a | b).sum()
            if iou > 0.5:
                ious.append(iou)
                matched_p.add(i)
                matched_r.add(j)
    tp = len(ious)
    fp = int((pred_cls == c).sum()) - len(matched_p)
    fn = int((ref_cls == c).sum()) - len(matched_r)
    d = tp + fp / 2 + fn / 2
    return sum(ious) / d, (sum(ious) / tp if tp else math.nan), tp / d


@pytest.mark.parametrize("seed", [5, 6])
def test_pq_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = _random_instances(rng, 30, (48, 48))
    pred = _random_instances(np.random.default_rng(seed), 30, (48, 48))  # same draws: many exact matches
    pred = np.where(rng.random(pred.shape) < 0.1, 0, pred)  # then damaged
    _, inv = np.unique(pred, return_inverse=True)
    pred = inv.reshape(ref.shape)
    ref_cls = rng.integers(1, 3, size=int(ref.max()))
    pred_cls = rng.integers(1, 3, size=int(pred.max()))
    for s in score_instances(overlaps_of_rasters(pred, ref, pred_cls, ref_cls)):
        pq, sq, rq = _brute_force_pq(pred, ref, pred_cls, ref_cls, s.class_id)
        assert s.tp > 0
        assert (s.pq, s.sq, s.rq) == (pytest.approx(pq), pytest.approx(sq), pytest.approx(rq))
