"""The training recipe's pieces: baselines on the validation pixels (against scikit-image / scikit-learn),
smoothed checkpoint selection, zoom and jitter that keep bands and labels aligned, gradient accumulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from geoseg.legend import ClassInfo
from geoseg.methods.checkpoint import read_meta
from geoseg.methods.training import TrainConfig, TrainPair, WindowSampler, open_sources, train
from geoseg.methods.training.augment import Augment, resize_pair
from geoseg.methods.training.baselines import pick_index, score_baselines
from geoseg.methods.training.data import IGNORE_INDEX, _TrainStream
from geoseg.methods.training.loop import _Best, baselines_path
from geoseg.methods.training.objectives import EarlyStopping
from tests.fixtures import blocky_classes, write_raster

torch.set_num_threads(1)

BANDS = ["blue", "green", "red", "nir"]
#: soil (low NDVI), crop and weed (both green: one NDVI level), and a fourth spectrum only k-means can split
SPECTRA = np.array([[900, 1000, 1100, 1200], [300, 700, 250, 2600], [320, 720, 270, 2500], [2000, 2100, 2200, 2300]])


def _tiles(classes: np.ndarray, seed: int, noise: float = 30.0):
    rng = np.random.default_rng(seed)
    img = (SPECTRA[classes].transpose(2, 0, 1) + rng.normal(0, noise, (4, *classes.shape))).astype(np.float32)
    valid = np.ones(classes.shape, bool)
    valid[:3, :3] = False
    target = classes.astype(np.uint8).copy()
    target[~valid] = IGNORE_INDEX
    target[-2:, :] = IGNORE_INDEX  # unlabelled but valid pixels: fitted on, never scored or mapped
    return img, valid, target


def _jaccard(ref: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    from sklearn.metrics import jaccard_score

    return jaccard_score(ref, pred, labels=range(k), average=None, zero_division=0)


def test_baselines_equal_skimage_otsu_and_sklearn_kmeans_mapped_on_training_pixels():
    from skimage.filters import threshold_otsu
    from sklearn.cluster import KMeans

    k = 4
    # training: crop (1) outnumbers weed (2); validation: weed outnumbers crop, so a mapping made on the
    # validation pixels would call the green output "weed" and score differently
    train_cls = np.zeros((60, 80), np.int64)
    train_cls[:, 30:60] = 1
    train_cls[:20, 60:] = 2
    train_cls[40:, 60:] = 3
    val_cls = np.zeros((40, 50), np.int64)
    val_cls[:, 10:20] = 1
    val_cls[:, 20:45] = 2
    val_cls[:10, 45:] = 3
    tr, va = _tiles(train_cls, 1), _tiles(val_cls, 2)
    names = ["soil", "crop", "weed", "other"]
    otsu, km = score_baselines(BANDS, [tr], [va], names, seed=3)

    # the independent computation: NDVI, scikit-image's Otsu, scikit-learn's KMeans, a majority mapping by hand
    x_tr, y_tr = tr[0][:, tr[1]].T.astype(np.float64), tr[2][tr[1]]
    x_va, y_va = va[0][:, va[1]].T.astype(np.float64), va[2][va[1]]

    def ndvi(x):
        return (x[:, 3] - x[:, 2]) / (x[:, 3] + x[:, 2])

    def majority(out_tr, n_out):
        lab = y_tr != IGNORE_INDEX
        return {o: int(np.bincount(y_tr[lab & (out_tr == o)], minlength=k).argmax())
                for o in range(n_out) if (lab & (out_tr == o)).any()}

    t = threshold_otsu(ndvi(x_tr))
    m = majority((ndvi(x_tr) > t).astype(int), 2)
    assert m == {0: 0, 1: 1}  # "above" is crop by the training pixels (weed by the validation pixels)
    scored = y_va != IGNORE_INDEX
    pred = np.array([m[o] for o in (ndvi(x_va) > t).astype(int)])
    np.testing.assert_allclose(otsu.iou, _jaccard(y_va[scored], pred[scored], k))
    assert otsu.name == "ndvi+otsu" and otsu.mapping == {"below": "soil", "above": "crop"}
    assert otsu.val_px == scored.sum() and np.isclose(otsu.iou[2], 0.0)

    mean, std = x_tr.mean(0), x_tr.std(0)
    fit = KMeans(k, n_init=4, random_state=3).fit((x_tr - mean) / std)
    m = majority(fit.labels_, k)
    pred = np.array([m.get(int(o), -1) for o in fit.predict((x_va - mean) / std)])
    np.testing.assert_allclose(km.iou, _jaccard(y_va[scored], pred[scored], k))
    assert km.name == "kmeans" and km.miou == pytest.approx(np.nanmean(km.iou))


def test_index_baseline_uses_ndvi_where_nir_exists_else_exg_else_none():
    assert pick_index(["red", "green", "blue", "nir"]).text == "ndvi"
    assert pick_index(["red", "green", "blue"]).text == "exg"
    assert pick_index(["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                       "B12"]).text == "ndvi"  # Sentinel-2 names: B8A says which sensor numbers the bands
    assert pick_index(["b1", "b2"]) is None
    # without an index, only k-means is scored
    cls = blocky_classes(40, 40, cell=9) % 2
    img, valid, target = _tiles(cls, 0)
    out = score_baselines(["b1", "b2", "b3", "b4"], [(img, valid, target)], [(img, valid, target)], ["a", "b"])
    assert [b.name for b in out] == ["kmeans"]


def test_smoothed_selection_ignores_a_single_lucky_epoch():
    scores = [0.50, 0.80, 0.45, 0.70, 0.74, 0.76]
    es = EarlyStopping(patience=99, alpha=0.5)
    rows = []
    for e, s in enumerate(scores, 1):
        es.update(s)
        rows.append({"epoch": e, "val_miou": s, "val_miou_ema": es.ema})
    raw, smooth = _Best("val_miou"), _Best("val_miou_ema")
    for r in rows:
        raw.improved_by(r)
        smooth.improved_by(r)
    assert raw.epoch == 2  # the spike
    ema = [r["val_miou_ema"] for r in rows]
    assert smooth.epoch == int(np.argmax(ema)) + 1 == 6 and smooth.miou == 0.76 and smooth.score == max(ema)


def _pure(onehot: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose one-hot bands are exactly one class (not a bilinear mix of neighbours), and that class."""
    v = onehot / scale
    pure = np.isclose(v, 0, atol=1e-4).sum(0) == v.shape[0] - 1
    pure &= np.isclose(v.max(0), 1, atol=1e-4)
    return pure, v.argmax(0)


def test_resize_pair_keeps_each_label_on_the_pixel_its_band_value_came_from():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (12, 18)).astype(np.uint8)
    onehot = (target[None] == np.arange(5)[:, None, None]).astype(np.float32)
    # exact integer zoom: nearest is pixel repetition
    xz, tz = resize_pair(onehot, target, 24, 36)
    np.testing.assert_array_equal(tz, np.repeat(np.repeat(target, 2, 0), 2, 1))
    # any zoom: where the bands are one class's alone (not a mix of neighbours), the label is that class
    blocks = np.repeat(np.repeat(target, 3, 0), 3, 1)
    onehot = (blocks[None] == np.arange(5)[:, None, None]).astype(np.float32)
    for out in ((41, 60), (30, 43), (47, 70)):
        xz, tz = resize_pair(onehot, blocks, *out)
        assert tz.shape == xz.shape[1:] == out
        pure, cls = _pure(xz)
        assert pure.mean() > 0.3
        np.testing.assert_array_equal(cls[pure], tz[pure])
    # a label shifted by one pixel against its bands would fail the check above
    pure, cls = _pure(resize_pair(onehot, blocks, 41, 60)[0])
    assert (np.roll(resize_pair(onehot, blocks, 41, 60)[1], 1, axis=1)[pure] != cls[pure]).any()


def test_training_stream_zoom_flips_and_jitter_keep_bands_and_labels_aligned(tmp_path):
    cls = blocky_classes(200, 220, cell=13)
    img = np.concatenate([(cls[None] == np.arange(4)[:, None, None]) * 100.0, (cls * 7 + 3)[None]]).astype(np.float32)
    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(tmp_path / "img.tif", img, transform=tr, descriptions=("b1", "b2", "b3", "b4", "b5"))
    write_raster(tmp_path / "ref.tif", (cls + 1).astype(np.uint8), transform=tr, nodata=0)
    classes = [ClassInfo(i, f"c{i}", "#000000") for i in range(1, 5)]
    cfg = TrainConfig(pairs=[TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif")], classes=classes,
                      tile_size=48, val_fraction=0.0, checkpoint=tmp_path / "m")
    src, _ = open_sources(cfg)
    sampler = WindowSampler(src, 4, 48, class_balanced=True)
    zeros, ones = np.zeros(5, np.float32), np.ones(5, np.float32)
    stream = iter(_TrainStream(sampler, [(zeros, ones)], seed=5, aug=Augment(48, scale=0.4)))
    mixed = 0
    for _ in range(40):
        x, y = next(stream)
        assert x.shape == (5, 48, 48) and y.shape == (48, 48)
        lab = y != IGNORE_INDEX
        pure, c = _pure(x[:4], 100.0)
        pure &= lab
        assert pure.mean() > 0.3
        np.testing.assert_array_equal(c[pure], y[pure])
        # band 5 is a linear function of the one-hot bands: resampling keeps it, pixel by pixel
        np.testing.assert_allclose(x[4][lab], (x[:4, lab] / 100 * (np.arange(4) * 7 + 3)[:, None]).sum(0), atol=1e-3)
        mixed += int((lab & ~pure).any())
    assert mixed > 10  # the zoom resampled most windows (pixels mixing two classes at their edges)
    # jitter: bands change by a per-band gain and shift, labels not at all
    for seed in range(5):  # the first sample of a stream: the same window with and without jitter
        xj, yj = next(iter(_TrainStream(sampler, [(zeros, ones)], seed=seed, aug=Augment(48, jitter=0.2))))
        xp, yp = next(iter(_TrainStream(sampler, [(zeros, ones)], seed=seed, aug=Augment(48))))
        np.testing.assert_array_equal(yj, yp)
        for b in range(5):
            gain, shift = np.polyfit(xp[b].ravel(), xj[b].ravel(), 1)
            assert 0.8 <= gain <= 1.2 and abs(shift) <= 0.2 and not (gain == 1 and shift == 0)
            np.testing.assert_allclose(xj[b], xp[b] * gain + shift, rtol=1e-4, atol=1e-3)


def test_kmeans_per_scene_follows_a_brighter_date_that_pooled_kmeans_does_not():
    """The validation scene is the training scene on a hazier date (every band x 1.8 + 300): k-means fitted on the
    training pixels as delivered calls most of it one class; standardised per scene, as a network with
    ``normalisation: scene`` sees it, the same k-means labels it as well as the training scene."""
    from geoseg.methods.scenestats import NetworkChannels, image_statistics
    from geoseg.methods.training.baselines import kmeans_per_scene_baseline, standardised

    rng = np.random.default_rng(1)
    cls = blocky_classes(80, 80, cell=9) % 2
    img = (SPECTRA[cls].transpose(2, 0, 1) + rng.normal(0, 30, (4, 80, 80))).astype(np.float32)
    later = img * 1.8 + 300
    valid = np.ones((80, 80), bool)
    train_tile, val_tile = (img, valid, cls.astype(np.uint8)), (later, valid, cls.astype(np.uint8))
    pooled = score_baselines(BANDS, [train_tile], [val_tile], ["soil", "crop"])[-1]
    own = [standardised(t, *image_statistics(t[0], valid, NetworkChannels(4))) for t in (train_tile, val_tile)]
    per_scene = kmeans_per_scene_baseline(BANDS, own[:1], own[1:], ["soil", "crop"])
    assert pooled.name == "kmeans" and per_scene.name == "kmeans per scene"
    assert per_scene.miou > 0.95 > 0.6 > pooled.miou


def test_run_writes_baselines_table_and_accumulates_gradients(tmp_path):
    rng = np.random.default_rng(0)
    cls = blocky_classes(96, 96, cell=11) % 2
    tr = from_origin(500000, 5100000, 10, 10)
    for name in ("a", "b"):
        img = (SPECTRA[cls].transpose(2, 0, 1) + rng.normal(0, 40, (4, 96, 96))).astype("uint16")
        write_raster(tmp_path / f"{name}.tif", img, transform=tr, descriptions=BANDS)
    write_raster(tmp_path / "ref.tif", (cls + 1).astype(np.uint8), transform=tr, nodata=0)
    classes = [ClassInfo(1, "soil", "#000000"), ClassInfo(2, "crop", "#00ff00")]
    batches: list[int] = []
    cfg = TrainConfig(
        pairs=[TrainPair(image=tmp_path / "a.tif", reference=tmp_path / "ref.tif")],
        val_pairs=[TrainPair(image=tmp_path / "b.tif", reference=tmp_path / "ref.tif")], classes=classes,
        encoder="resnet18", encoder_depth=3, decoder_channels=16, tile_size=48, batch_size=2, epochs=2,
        steps_per_epoch=2, accumulate_steps=3, val_tiles=4, norm_windows=4, device="cpu", progress=False,
        checkpoint=tmp_path / "m",
    )
    import geoseg.methods.training.loop as loop

    real = loop._batches

    def counting(*a, **kw):
        for b in real(*a, **kw):
            batches.append(1)
            yield b

    loop._batches = counting
    try:
        result = train(cfg)
    finally:
        loop._batches = real
    assert len(batches) == 2 * 2 * 3  # epochs x optimiser steps x accumulated batches
    table = json.loads(baselines_path(cfg.checkpoint).read_text())
    assert [t["method"] for t in table] == ["network", "ndvi+otsu", "kmeans", "kmeans per scene"]  # normalisation: scene
    assert {t["val_px"] for t in table} == {result.history[0]["val_px"]}
    assert table[0]["epoch"] == result.best_epoch and table[0]["val_iou"] == result.history[
        result.best_epoch - 1]["val_iou"]
    # spectrally separable classes: both baselines are near perfect on the validation image
    assert table[1]["val_miou"] > 0.95 and table[2]["val_miou"] > 0.95 and table[3]["val_miou"] > 0.95
    meta = read_meta(cfg.checkpoint)
    assert meta.training.baselines == table[1:] and meta.training.cpu_seconds > 0
    assert meta.training.selection == "smoothed"


@pytest.mark.parametrize(("epochs", "until", "plain"), [(4, 0.5, 2), (5, 0.5, 2), (3, 1.0, 0), (1, 0.5, 0), (4, 0.01, 3)])
def test_last_epochs_see_the_pixels_as_delivered(tmp_path, epochs, until, plain):
    """Zoom and jitter for the first ``augment_until`` of the epochs (at least one), then the plain stream."""
    rng = np.random.default_rng(1)
    cls = blocky_classes(64, 64, cell=9) % 2
    tr = from_origin(500000, 5100000, 10, 10)
    img = (SPECTRA[cls].transpose(2, 0, 1) + rng.normal(0, 40, (4, 64, 64))).astype("uint16")
    write_raster(tmp_path / "a.tif", img, transform=tr, descriptions=BANDS)
    write_raster(tmp_path / "ref.tif", (cls + 1).astype(np.uint8), transform=tr, nodata=0)
    cfg = TrainConfig(
        pairs=[TrainPair(image=tmp_path / "a.tif", reference=tmp_path / "ref.tif")],
        classes=[ClassInfo(1, "soil", "#000000"), ClassInfo(2, "crop", "#00ff00")], encoder_depth=3,
        decoder_channels=16, refine_channels=0, tile_size=32, batch_size=2, epochs=epochs, steps_per_epoch=2,
        val_fraction=0.25, val_tiles=2, norm_windows=4, augment_scale=0.3, augment_jitter=0.2, augment_until=until,
        baselines=False, device="cpu", progress=False, checkpoint=tmp_path / "m",
    )
    import geoseg.methods.training.loop as loop

    seen: list[tuple[float, float]] = []
    real = loop._batches

    def tagging(stream, *a, **kw):
        for b in real(stream, *a, **kw):
            seen.append((stream.aug.scale, stream.aug.jitter))
            yield b

    loop._batches = tagging
    try:
        train(cfg)
    finally:
        loop._batches = real
    steps = 2 * epochs
    assert seen == [(0.3, 0.2)] * (steps - 2 * plain) + [(0.0, 0.0)] * (2 * plain)
