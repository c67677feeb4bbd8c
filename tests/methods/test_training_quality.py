"""Training quality options: focal/Dice losses with class weights, schedules, EMA early stopping,
fine-tuning from a checkpoint and the learning-curve PNG."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from rasterio.transform import from_origin

from geoseg.errors import ModelError
from geoseg.legend import ClassInfo
from geoseg.methods.checkpoint import load_checkpoint, read_meta
from geoseg.methods.training import TrainConfig, TrainPair, history_path, train
from geoseg.methods.training.objectives import EarlyStopping, focal_loss, make_loss, make_schedule
from tests.fixtures import write_raster

torch.set_num_threads(1)

CLASSES = [ClassInfo(1, "a", "#ff0000"), ClassInfo(2, "b", "#00ff00")]
TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": 16, "progress": False, "device": "cpu",
        "tile_size": 64, "tile_overlap": 16, "batch_size": 2, "val_tiles": 2, "norm_windows": 2}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> TrainPair:
    d = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    img = rng.integers(1, 1000, (3, 128, 128)).astype("uint16")
    ref = np.ones((128, 128), np.uint8)
    ref[:, 64:] = 2
    img[2, :, 64:] += 300
    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(d / "img.tif", img, transform=tr, descriptions=("blue", "green", "nir"))
    write_raster(d / "ref.tif", ref, transform=tr, nodata=0)
    return TrainPair(image=d / "img.tif", reference=d / "ref.tif")


# --- losses -------------------------------------------------------------------------------------------


def _logits_and_target():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=g)
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    target[0, 0, :3] = 255  # ignored pixels
    return logits, target


def test_focal_loss_with_gamma_0_is_weighted_cross_entropy():
    logits, target = _logits_and_target()
    w = torch.tensor([0.5, 2.0, 1.0])
    oracle = torch.nn.CrossEntropyLoss(weight=w, ignore_index=255)(logits, target)
    torch.testing.assert_close(focal_loss(logits, target, 0.0, w), oracle)
    torch.testing.assert_close(focal_loss(logits, target, 0.0), torch.nn.functional.cross_entropy(logits, target,
                                                                                                ignore_index=255))


def test_focal_loss_matches_its_formula_in_numpy():
    logits, target = _logits_and_target()
    w = np.array([0.5, 2.0, 1.0])
    x = logits.numpy().astype(np.float64)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = target.numpy()
    keep = y != 255
    n, h, wd = np.nonzero(keep)
    pt = p[n, y[keep], h, wd]
    wt = w[y[keep]]
    expected = (wt * -((1 - pt) ** 2) * np.log(pt)).sum() / wt.sum()
    assert float(focal_loss(logits, target, 2.0, torch.tensor(w, dtype=torch.float32))) == pytest.approx(expected, rel=1e-5)
    # Focusing: confident, correct pixels count less than under cross-entropy.
    assert float(focal_loss(logits, target, 2.0)) < float(focal_loss(logits, target, 0.0))


def test_loss_kinds():
    import segmentation_models_pytorch as smp

    logits, target = _logits_and_target()
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=255)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    dev = torch.device("cpu")
    torch.testing.assert_close(make_loss("dice", 5.0, None, 2.0, dev)(logits, target), dice)
    torch.testing.assert_close(make_loss("ce", 0.5, None, 2.0, dev)(logits, target), ce + 0.5 * dice)
    torch.testing.assert_close(make_loss("focal", 0.0, None, 2.0, dev)(logits, target), focal_loss(logits, target, 2.0))


# --- schedules and early stopping -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["one_cycle", "cosine", "constant"])
def test_learning_rate_schedules(kind):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_schedule(kind, opt, 0.1, 100)
    lrs = []
    for _ in range(100):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    if kind == "cosine":
        assert all(a >= b for a, b in itertools.pairwise(lrs)) and lrs[-1] < 1e-6
        assert lrs[49] == pytest.approx(0.05 * (1 + np.cos(np.pi * 50 / 100)))
    elif kind == "one_cycle":
        assert max(lrs) == pytest.approx(0.1, rel=1e-3) and lrs[-1] < 1e-3 and lrs[0] < 0.1
    else:
        assert lrs == [0.1] * 100


def test_early_stopping_follows_the_pandas_ema():
    scores = [0.30, 0.45, 0.50, 0.48, 0.52, 0.47, 0.46, 0.44, 0.43]
    ema = pd.Series(scores).ewm(alpha=0.4, adjust=False).mean().tolist()
    best, stale, expected_stop = -np.inf, 0, None
    for i, e in enumerate(ema):
        stale = 0 if e > best + 0.01 else stale + 1
        best = max(best, e) if stale == 0 else best
        if stale >= 2:
            expected_stop = i
            break
    es = EarlyStopping(patience=2, alpha=0.4, min_delta=0.01)
    stops = [es.update(s) for s in scores]
    assert stops.index(True) == expected_stop
    np.testing.assert_allclose(es.history[: expected_stop + 1], ema[: expected_stop + 1])


def test_quality_settings_are_validated(tmp_path):
    base = {"pairs": [{"image": "a.tif", "reference": "b.tif"}], "classes": CLASSES, "checkpoint": tmp_path / "m"}
    with pytest.raises(ValidationError, match="2 classes"):
        TrainConfig(**base, class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValidationError, match="not all 0"):
        TrainConfig(**base, class_weights=[0.0, 0.0])
    with pytest.raises(ValidationError, match="validation score"):
        TrainConfig(**base, early_stopping_patience=2, val_fraction=0)
    with pytest.raises(ValidationError, match="loss"):
        TrainConfig(**base, loss="hinge")


# --- runs ---------------------------------------------------------------------------------------------


def test_focal_cosine_run_stops_early_and_draws_its_curve(pair, tmp_path):
    cfg = TrainConfig(
        pairs=[pair], classes=CLASSES, loss="focal", class_weights=[1.0, 3.0], lr_schedule="cosine", lr=1e-9,
        epochs=8, steps_per_epoch=1, val_fraction=0.25, early_stopping_patience=2, early_stopping_min_delta=0.05,
        checkpoint=tmp_path / "m", **TINY,
    )
    result = train(cfg)
    assert result.stopped_early and len(result.history) == 3  # lr ~0: the score cannot gain 0.05
    ema = pd.Series([h["val_miou"] for h in result.history]).ewm(alpha=0.5, adjust=False).mean()
    np.testing.assert_allclose([h["val_miou_ema"] for h in result.history], ema)
    meta = read_meta(cfg.checkpoint)
    assert meta.training.stopped_early and meta.training.epochs == 3
    png = history_path(cfg.checkpoint).with_suffix(".png")
    assert png == tmp_path / "m.history.png"
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 500
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines and text, not a blank canvas


def test_fine_tuning_starts_from_the_checkpoint(pair, tmp_path):
    base = TrainConfig(pairs=[pair], classes=CLASSES, epochs=1, steps_per_epoch=1, lr=1e-3, lr_schedule="constant",
                       val_fraction=0.25,
                       checkpoint=tmp_path / "a", **TINY)
    train(base)
    a, meta_a = load_checkpoint(base.checkpoint)
    still = {"lr": 1e-12, "lr_schedule": "constant", "weight_decay": 0.0}

    tuned = train(base.model_copy(update={**still, "checkpoint": tmp_path / "b", "init_checkpoint": base.checkpoint}))
    b, meta_b = load_checkpoint(tuned.checkpoint)
    fresh = train(base.model_copy(update={**still, "checkpoint": tmp_path / "c"}))
    c, _ = load_checkpoint(fresh.checkpoint)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)  # lr ~0: still the checkpoint's weights
    assert not all(torch.allclose(pa[k], pc[k], atol=1e-6) for k in pa)  # a fresh start is not
    assert meta_b.band_mean == meta_a.band_mean and meta_b.band_std == meta_a.band_std
    assert meta_b.training.init_checkpoint == str(base.checkpoint)
    # the network has seen the checkpoint's training image and the new one (here the same image): both counted
    assert meta_a.training_envelope is not None and meta_b.training_envelope is not None
    assert meta_b.training_envelope == meta_a.training_envelope.model_copy(update={"images": 2})

    # Other classes (order): the head starts afresh, the rest is the checkpoint's.
    swapped = train(base.model_copy(update={**still, "checkpoint": tmp_path / "d", "init_checkpoint": base.checkpoint,
                                            "classes": CLASSES[::-1]}))
    d, _ = load_checkpoint(swapped.checkpoint)
    pd_ = dict(d.named_parameters())
    heads = ("base.segmentation_head.", "refine.")  # both map to the classes
    assert all(torch.allclose(pa[k], pd_[k], atol=1e-6) for k in pa if not k.startswith(heads))
    assert not torch.allclose(pa["base.segmentation_head.0.weight"], pd_["base.segmentation_head.0.weight"],
                              atol=1e-6)
    assert not torch.allclose(pa["refine.4.weight"], pd_["refine.4.weight"], atol=1e-6)  # trained, then fresh zeros

    with pytest.raises(ModelError, match="another network.*architecture: DeepLabV3Plus"):
        train(base.model_copy(update={"architecture": "Unet", "checkpoint": tmp_path / "e",
                                      "init_checkpoint": base.checkpoint}))
    with pytest.raises(ModelError, match="another network.*refine_channels: 32 \\(job: 0\\)"):
        train(base.model_copy(update={"refine_channels": 0, "checkpoint": tmp_path / "f",
                                      "init_checkpoint": base.checkpoint}))


def test_fine_tuning_takes_the_network_keys_the_job_leaves_out(pair, tmp_path):
    """An older checkpoint (no refinement head, depth 4, stride 16) fine-tuned by a job that names none of those
    keys: the new defaults (head 32, depth 3, stride 8) would refuse it; the checkpoint's network is taken."""
    old = TrainConfig(pairs=[pair], classes=CLASSES, epochs=1, steps_per_epoch=1, val_fraction=0.25,
                      checkpoint=tmp_path / "old", refine_channels=0, **{**TINY, "encoder_depth": 4},
                      encoder_output_stride=16, normalisation="training")
    train(old)
    job = {k: v for k, v in TINY.items() if k not in ("encoder", "encoder_depth", "decoder_channels")}
    tuned = train(TrainConfig(pairs=[pair], classes=CLASSES, epochs=1, steps_per_epoch=1, val_fraction=0.25,
                              checkpoint=tmp_path / "new", init_checkpoint=old.checkpoint, **job))
    meta = read_meta(tuned.checkpoint)
    assert (meta.refine_channels, meta.encoder_depth, meta.encoder_output_stride, meta.decoder_channels) == (0, 4, 16, 16)
    assert meta.normalisation == "training"  # the inputs its first layer learned on, whatever the default now
    a, _ = load_checkpoint(old.checkpoint)
    b, _ = load_checkpoint(tuned.checkpoint)
    assert a.state_dict().keys() == b.state_dict().keys()
    # a key the job names must still agree
    with pytest.raises(ModelError, match="another network.*encoder_depth: 4 \\(job: 3\\)"):
        train(TrainConfig(pairs=[pair], classes=CLASSES, epochs=1, steps_per_epoch=1, val_fraction=0.25,
                          checkpoint=tmp_path / "x", init_checkpoint=old.checkpoint, encoder_depth=3, **job))
    with pytest.raises(ModelError, match="another network.*normalisation: training \\(job: scene\\)"):
        train(TrainConfig(pairs=[pair], classes=CLASSES, epochs=1, steps_per_epoch=1, val_fraction=0.25,
                          checkpoint=tmp_path / "x", init_checkpoint=old.checkpoint, normalisation="scene", **job))
