"""PQ, SQ, RQ, F1, AP50 and AP@[.5:.95] against a hand-made case and an independent implementation (pycocotools)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoseg.accuracy.instancemetrics import COCO_THRESHOLDS, overlaps_of_rasters, score_instances
from tests.fixtures import brute_force_pq, coco_ap


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
    theirs = coco_ap(pred, ref, pred_cls, ref_cls, score)
    assert ours.keys() == theirs.keys()
    for c in ours:
        assert ours[c] == pytest.approx(theirs[c], abs=1e-12)
    assert len(COCO_THRESHOLDS) == 10


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
        pq, sq, rq = brute_force_pq(pred, ref, pred_cls, ref_cls, s.class_id)
        assert s.tp > 0
        assert (s.pq, s.sq, s.rq) == (pytest.approx(pq), pytest.approx(sq), pytest.approx(rq))
