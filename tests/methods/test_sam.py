"""SAM as a tile instance model, with a tiny SAM of random weights (segment_anything's own modeling classes):
one fixed normalisation for every tile, deterministic proposals, classes from the labels, weights read as
tensors only, prompts from a vector layer."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

from geoseg.errors import CheckpointError, MissingExtraError
from geoseg.methods.proposals import InstanceProposal, TileInstanceModel
from geoseg.methods.sam import (
    BandScaling,
    SamInstanceModel,
    SamShape,
    SamWeights,
    build_sam,
    classify_proposals,
    prompts_in_window,
)

pytest.importorskip("segment_anything")

TINY = SamShape(embed_dim=64, depth=2, heads=2, global_blocks=(1,), image_size=256, prompt_dim=32, decoder_mlp=64,
                decoder_heads=2)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam(TINY)


def _scene(seed: int = 0) -> np.ndarray:
    """Three bands of reflectance; the right half far brighter (a tile there has another min/max)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.02, 0.3, (3, 96, 160)).astype(np.float32)
    img[:, :, 100:] += 2.0
    return img


def _model(sam, **kw) -> SamInstanceModel:
    opts = {"tile": 64, "overlap": 16, "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    return SamInstanceModel(sam, BandScaling((0.0, 0.0, 0.0), (2.5, 2.5, 2.5)), **{**opts, **kw})


def test_every_tile_is_shown_to_sam_through_the_same_scaling(monkeypatch):
    """What SAM's generator receives (recorded at its entry) for two overlapping tiles agrees on the shared
    pixels although one tile holds much brighter pixels: no per-tile min/max."""
    from segment_anything import SamAutomaticMaskGenerator

    seen: list[np.ndarray] = []
    real = SamAutomaticMaskGenerator.generate

    def spy(self, image):
        seen.append(image.copy())
        return real(self, image)

    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", spy)
    img = _scene()
    model = _model(_tiny())
    valid = np.ones(img.shape[1:], bool)
    model.propose(img[:, :, 0:96], valid[:, 0:96])  # dark only
    model.propose(img[:, :, 64:160], valid[:, 64:160])  # dark and bright
    a, b = seen
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3)
    np.testing.assert_array_equal(a[:, 64:96], b[:, 0:32])
    assert int(a.max()) < 40 and int(b.max()) > 200  # the dark tile was not stretched to its own range
    want = np.clip(np.rint(img[:, :, 64:96].astype(np.float64) / 2.5 * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(a[:, 64:96], want)


def test_scaling_from_a_global_sample_is_its_percentiles():
    rng = np.random.default_rng(3)
    sample = rng.normal([0.1, 0.2, 0.3], 0.05, size=(5000, 3))
    s = BandScaling.from_sample(sample)
    assert s.low == pytest.approx(tuple(np.percentile(sample, 2, axis=0)))
    assert s.high == pytest.approx(tuple(np.percentile(sample, 98, axis=0)))


def test_proposals_are_deterministic_and_follow_the_protocol():
    img = _scene()[:, :, :96]
    valid = np.ones(img.shape[1:], bool)
    valid[:8] = False
    first = _model(_tiny(0)).propose(img, valid)
    again = _model(_tiny(0)).propose(img, valid)  # a fresh model from the same weights
    typed: TileInstanceModel = _model(_tiny(0))  # the protocol the seam merge takes (checked by mypy)
    assert (typed.tile, typed.overlap) == (64, 16)
    assert first and len(first) == len(again)
    for p, q in zip(first, again):
        assert p.score == q.score and np.array_equal(p.mask, q.mask)
        assert p.class_id == 0 and p.mask.shape == valid.shape and not p.mask[~valid].any()
    assert [p.score for p in first] == sorted((p.score for p in first), reverse=True)


def test_masks_take_the_majority_class_of_the_labels_and_non_things_are_dropped():
    labels = np.ones((10, 10), np.uint8)
    labels[:, 5:] = 2
    labels[8:, :] = 3
    left = np.zeros((10, 10), bool)
    left[0:6, 0:7] = True  # 30 px of class 1, 12 of class 2
    right = np.zeros((10, 10), bool)
    right[:, 6:] = True  # 32 px of class 2, 8 of class 3
    bottom = np.zeros((10, 10), bool)
    bottom[7:, :] = True  # 20 px of class 3: not a thing
    tie = np.zeros((10, 10), bool)
    tie[0, 4:6] = True  # one pixel of 1, one of 2: the smaller id
    out = classify_proposals([InstanceProposal(m, 0, s) for m, s in ((left, .9), (right, .8), (bottom, .7), (tie, .6))],
                             labels, things=[1, 2])
    assert [(p.class_id, p.score) for p in out] == [(1, .9), (2, .8), (1, .6)]


def test_a_labels_band_classes_the_masks_in_the_tile():
    """With the labels as a band of the image, proposals carry their majority class; non-things go."""
    img = _scene()[:, :, :96]
    valid = np.ones(img.shape[1:], bool)
    plain = _model(_tiny(0)).propose(img, valid)
    labels = np.where(np.arange(96)[None, :] < 48, 2, 1) * np.ones((96, 1))
    with_labels = np.concatenate([img, labels[None].astype(np.float32)])
    kept = {}
    for thing in (1, 2):
        got = _model(_tiny(0), labels_band=3, things=(thing,)).propose(with_labels, valid)
        want = classify_proposals(plain, labels.astype(np.uint8), [thing])
        assert [(p.class_id, p.score, p.mask.tobytes()) for p in got] == [
            (p.class_id, p.score, p.mask.tobytes()) for p in want]
        assert all(p.class_id == thing for p in got)
        kept[thing] = len(got)
    assert kept[1] + kept[2] == len(plain) > 0  # each mask is kept under its majority class only


def test_weights_load_from_safetensors_and_pth_and_code_is_never_unpickled(tmp_path):
    from safetensors.torch import save_file

    sam = _tiny(5)
    state = {k: v.contiguous() for k, v in sam.state_dict().items()}
    save_file(state, tmp_path / "sam.safetensors")
    torch.save(state, tmp_path / "sam.pth")
    img = _scene()[:, :, :96]
    valid = np.ones(img.shape[1:], bool)
    want = [(p.score, p.mask.tobytes()) for p in _model(sam).propose(img, valid)]
    for name in ("sam.safetensors", "sam.pth"):
        torch.manual_seed(99)  # other random weights, replaced by the file's
        loaded = build_sam(TINY, tmp_path / name)
        assert [(p.score, p.mask.tobytes()) for p in _model(loaded).propose(img, valid)] == want
    by_file = _model(SamWeights(TINY, str(tmp_path / "sam.safetensors")))  # what a task carries: the path
    assert len(pickle.dumps(by_file)) < 4096
    assert [(p.score, p.mask.tobytes()) for p in pickle.loads(pickle.dumps(by_file)).propose(img, valid)] == want

    witness = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    torch.save({"w": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        build_sam(TINY, tmp_path / "evil.pth")
    assert not witness.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam(TINY, tmp_path / "none.pth")


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'geoseg\[sam\]'"):
        build_sam(TINY)


def test_prompts_from_a_vector_layer_in_tile_pixels(tmp_path):
    import geopandas as gpd
    from affine import Affine
    from shapely.geometry import Point, box

    from geoseg.geo import GeoGrid

    grid = GeoGrid.of(96, 96, Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0), "EPSG:32633")
    layer = tmp_path / "prompts.gpkg"
    gpd.GeoDataFrame(geometry=[Point(1010.25, 1990.25), box(1020.0, 1970.0, 1030.0, 1980.0), Point(5000, 5000)],
                     crs="EPSG:32633").to_file(layer)
    points, boxes = prompts_in_window(layer, grid)
    assert points.tolist() == [[20.5, 19.5]]  # x = column, y = row, pixel units
    assert boxes.tolist() == [[40.0, 40.0, 60.0, 60.0]]
    model = _model(_tiny())
    img = _scene()[:, :, :96]
    valid = np.ones((96, 96), bool)
    one = model.propose_prompted(img, valid, points, boxes)
    two = model.propose_prompted(img, valid, points, boxes)
    assert len(one) <= 2 and [(p.score, p.mask.tobytes()) for p in one] == [(p.score, p.mask.tobytes()) for p in two]
