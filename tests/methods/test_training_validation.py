"""Validation scores what a run labels: the held-out blocks against ``predict_chunk`` over the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.geo import Window
from geoseg.legend import LANDCOVER_CLASSES
from geoseg.methods.checkpoint import load_checkpoint, read_meta
from geoseg.methods.deeplab import predict_chunk
from geoseg.methods.training import (
    IGNORE_INDEX,
    TrainConfig,
    TrainPair,
    open_sources,
    train,
    validation_scores,
)
from geoseg.methods.training.validation import (
    ValidationBlock,
    read_validation,
    validation_blocks,
    validation_confusion,
)
from geoseg.samples.files import make_scene

torch.set_num_threads(1)

#: Not multiples of the tile: the last blocks are partial, and inference mirrors the image past its edges there.
HEIGHT, WIDTH = 150, 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network after one epoch (its checkpoint is the weights that epoch validated), and its config."""
    tmp = tmp_path_factory.mktemp("validation")
    files = make_scene("landcover", tmp / "lc", width=WIDTH, height=HEIGHT, seed=2, block=128)
    cfg = TrainConfig(
        pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(LANDCOVER_CLASSES),
        encoder_depth=3, decoder_channels=16, refine_channels=8, tile_size=32, tile_overlap=8, batch_size=2,
        epochs=1, steps_per_epoch=3, val_fraction=0.4, val_tiles=16, norm_windows=4, seed=0, baselines=False,
        device="cpu", progress=False, checkpoint=tmp / "m",
    )
    result = train(cfg)
    model, meta = load_checkpoint(cfg.checkpoint)
    return cfg, result, model.eval(), meta


def _whole_image_confusion(cfg: TrainConfig, model, meta) -> np.ndarray:
    """The oracle: the whole image labelled as a run labels a scene, counted on the held-out rows."""
    _, (val,) = open_sources(cfg)  # the held-out rows of the one image
    img, valid, target = val.read(0, 0, val.height, val.width)
    labels = predict_chunk(model, meta, img, valid, device="cpu", scene_stats=val.scene_statistics(meta.indices()))
    index_of = np.full(256, IGNORE_INDEX, np.int64)
    index_of[[c.id for c in meta.classes]] = np.arange(meta.n_classes)
    t, p = target[val.row_lo :].astype(np.int64), index_of[labels[val.row_lo :]]
    m = t != IGNORE_INDEX
    n = meta.n_classes
    return np.bincount(t[m] * n + p[m], minlength=n * n).reshape(n, n)


def test_the_epoch_score_is_the_whole_image_run_on_the_held_out_rows(trained):
    cfg, result, model, meta = trained
    oracle = _whole_image_confusion(cfg, model, meta)
    miou, iou = validation_scores(oracle)
    row = result.history[-1]
    assert row["val_px"] == int(oracle.sum()) > 0
    assert row["val_miou"] == miou
    expected = {c.name: (None if np.isnan(v) else float(v)) for c, v in zip(cfg.classes, iou)}
    assert row["val_iou"] == expected
    assert result.best_val_miou == miou


def test_how_the_held_out_rows_are_cut_into_blocks_changes_no_pixel(trained):
    """Blocks of one tile, of uneven sizes, or the whole strip at once: each is read with a tile of context
    (the image's own pixels between blocks), so every pixel gets the label the whole image gives it."""
    cfg, _, model, meta = trained
    _, val_src = open_sources(cfg)
    src = val_src[0]
    stats = [src.scene_statistics(meta.indices())]
    oracle = _whole_image_confusion(cfg, model, meta)
    rows = (src.row_lo, src.row_hi)
    cuts = {
        "whole strip": [Window(rows[0], 0, rows[1] - rows[0], src.width)],
        "tiles": [Window(r, c, min(32, rows[1] - r), min(32, src.width - c))
                  for r in range(rows[0], rows[1], 32) for c in range(0, src.width, 32)],
        "uneven": [Window(rows[0], 0, 7, 61), Window(rows[0], 61, 7, src.width - 61),
                   Window(rows[0] + 7, 0, rows[1] - rows[0] - 7, 13),
                   Window(rows[0] + 7, 13, rows[1] - rows[0] - 7, src.width - 13)],
    }
    for name, windows in cuts.items():
        val = read_validation(val_src, [ValidationBlock(0, w) for w in windows], stats)
        conf = validation_confusion(model, meta, val, val_src, torch.device("cpu"), 4)
        np.testing.assert_array_equal(conf, oracle, err_msg=name)


def test_blocks_cover_the_held_out_rows_or_stay_within_the_pixel_budget(trained):
    cfg, *_ = trained
    _, val_src = open_sources(cfg)
    src = val_src[0]
    area = (src.row_hi - src.row_lo) * src.width
    rng = np.random.default_rng(0)
    for tile, limit in ((32, 16), (32, 1), (16, 9), (16, 4), (64, 2)):
        blocks = validation_blocks(val_src, tile, limit, rng)
        cover = np.zeros((src.height, src.width), np.int64)
        for b in blocks:
            cover[b.window.slices] += 1
        assert cover.max() == 1, (tile, limit)  # disjoint
        assert not cover[: src.row_lo].any()  # never in the training rows
        px = int(cover.sum())
        if area <= limit * tile * tile:
            assert px == area, (tile, limit)  # everything held out is scored
        else:
            assert 0 < px <= limit * tile * tile, (tile, limit)
            assert all(b.window.height <= tile * 4 and b.window.width <= tile * 4 for b in blocks)


def test_the_weight_average_leaves_training_unchanged_and_is_what_is_kept(trained, tmp_path):
    """The fixture keeps the average (the default); without it the same steps give other weights."""
    cfg, averaged, averaged_model, _ = trained
    assert cfg.weight_average > 0 and read_meta(cfg.checkpoint).training.model_extra["weight_average"] == cfg.weight_average
    raw_cfg = cfg.model_copy(update={"weight_average": 0.0, "checkpoint": tmp_path / "raw"})
    result = train(raw_cfg)
    # the raw network's steps are the same: the losses of every epoch equal the run with the average
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in averaged.history]
    model, meta = load_checkpoint(raw_cfg.checkpoint)
    raw, kept = model.state_dict(), averaged_model.state_dict()
    assert any(not torch.equal(raw[k], kept[k]) for k in raw if raw[k].is_floating_point())
    # each run saves what it scored: the raw network here, the average in the fixture (tested above)
    miou, _ = validation_scores(_whole_image_confusion(raw_cfg, model.eval(), meta))
    assert result.history[-1]["val_miou"] == miou == result.best_val_miou
    assert read_meta(raw_cfg.checkpoint).training.model_extra["weight_average"] is None
