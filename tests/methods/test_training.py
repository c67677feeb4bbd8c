"""Training: configuration, window sampling from files, a short run, and crop-versus-weed against k-means."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rasterio
import torch
from pydantic import ValidationError
from rasterio.transform import from_origin

from geoseg.errors import BandError, GridMismatchError, InputError, MissingFileError
from geoseg.legend import CROPWEED_CLASSES, LANDCOVER_CLASSES, ClassInfo
from geoseg.methods.checkpoint import check_compatible, load_checkpoint, read_meta
from geoseg.methods.deeplab import predict_chunk
from geoseg.methods.scenestats import NetworkChannels, image_statistics
from geoseg.methods.training import (
    IGNORE_INDEX,
    TrainConfig,
    TrainPair,
    WindowSampler,
    history_path,
    open_sources,
    train,
    validation_blocks,
    validation_scores,
)
from geoseg.samples.synthetic import make_scene
from tests.fixtures import write_raster

# One thread: the test machine has two cores shared with other work, where two OpenMP threads stall.
torch.set_num_threads(1)

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=16, progress=False)
THREE = [ClassInfo(1, "a", "#ff0000"), ClassInfo(2, "b", "#00ff00"), ClassInfo(3, "rare", "#0000ff")]


def _three_class_pair(tmp_path, size: int = 300):
    """Random 3-band image; reference: halves of classes 1/2, a 6x6 square of class 3, unlabelled strip."""
    rng = np.random.default_rng(0)
    img = rng.integers(1, 1000, (3, size, size)).astype("uint16")
    ref = np.ones((size, size), np.uint8)
    ref[:, size // 2 :] = 2
    ref[40:46, 200:206] = 3
    ref[:, :5] = 0
    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(tmp_path / "img.tif", img, transform=tr, descriptions=("blue", "green", "nir"))
    write_raster(tmp_path / "ref.tif", ref, transform=tr, nodata=0)
    return TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif"), img, ref


def test_config_refuses_unknown_keys_and_bad_values(tmp_path):
    pair = {"image": "a.tif", "reference": "b.tif"}
    ok = dict(pairs=[pair], classes=THREE, checkpoint=tmp_path / "m")
    cfg = TrainConfig(**ok)
    assert (cfg.encoder, cfg.tile_size, cfg.num_workers, cfg.device) == ("resnet18", 256, 0, "auto")
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(**ok, learning_rate=0.1)
    with pytest.raises(ValidationError, match="exactly one"):
        TrainConfig(**{**ok, "pairs": [{"image": "a.tif"}]})
    with pytest.raises(ValidationError, match="class_field"):
        TrainConfig(**{**ok, "pairs": [{"image": "a.tif", "vector": "v.gpkg"}]})
    with pytest.raises(ValidationError, match="multiple of 16"):
        TrainConfig(**ok, tile_size=100)
    with pytest.raises(ValidationError, match="1..254"):
        TrainConfig(**{**ok, "classes": [ClassInfo(0, "x", "#000000"), ClassInfo(1, "y", "#ffffff")]})
    cfg = TrainConfig.model_validate_json(json.dumps({**ok, "checkpoint": "m", "classes": [
        {"id": 1, "name": "a", "color": "#ff0000"}, {"id": 2, "name": "b", "color": "#00ff00"}]}))
    assert cfg.classes[1] == ClassInfo(2, "b", "#00ff00")


def test_windows_stay_out_of_the_held_out_rows_and_balance_rare_classes(tmp_path):
    pair, _, ref = _three_class_pair(tmp_path)
    cfg = TrainConfig(pairs=[pair], classes=THREE, checkpoint=tmp_path / "m", tile_size=64, val_fraction=0.25)
    train_src, val_src = open_sources(cfg)
    assert (train_src[0].row_lo, train_src[0].row_hi) == (0, 225)
    assert (val_src[0].row_lo, val_src[0].row_hi) == (225, 300)
    rng = np.random.default_rng(0)
    for balanced in (True, False):
        sampler = WindowSampler(train_src, 3, 64, balanced)
        picks = [sampler.pick(rng) for _ in range(400)]
        assert all(r >= 0 and r + h <= 225 and c >= 0 and c + w <= 300 and (h, w) == (64, 64) for _, r, c, h, w in picks)
        rare = np.mean([(ref[r : r + h, c : c + w] == 3).any() for _, r, c, h, w in picks])
        if balanced:
            assert rare > 0.25, rare  # one class in three is the rare one
        else:
            assert rare < 0.15, rare
    blocks = validation_blocks(val_src, 64, 100, rng)
    assert blocks and all(b.window.row_off >= 225 for b in blocks)
    img, valid, target = train_src[0].read(0, 0, 64, 64)
    assert img.shape == (3, 64, 64) and img.dtype == np.float32
    assert (target[:, :5] == IGNORE_INDEX).all() and set(np.unique(target[:, 5:])) <= {0}


def test_vector_reference_is_rasterised_per_window_like_the_raster(tmp_path):
    import geopandas as gpd
    import shapely

    pair, _, ref = _three_class_pair(tmp_path)
    tr = from_origin(500000, 5100000, 10, 10)

    def box(r0, c0, r1, c1):
        x0, y0 = tr * (c0, r0)
        x1, y1 = tr * (c1, r1)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    gdf = gpd.GeoDataFrame({"cls": [1, 2, 3]}, geometry=[box(0, 5, 300, 150), box(0, 150, 300, 300),
                                                         box(40, 200, 46, 206)], crs="EPSG:32633")
    gdf.to_file(tmp_path / "ref.gpkg", driver="GPKG")
    vpair = TrainPair(image=pair.image, vector=tmp_path / "ref.gpkg", class_field="cls")
    cfg = dict(classes=THREE, checkpoint=tmp_path / "m", tile_size=64, val_fraction=0.0)
    (raster_src,), _ = open_sources(TrainConfig(pairs=[pair], **cfg))
    (vector_src,), _ = open_sources(TrainConfig(pairs=[vpair], **cfg))
    for r, c in [(0, 0), (20, 170), (236, 236), (30, 190)]:
        assert np.array_equal(raster_src.read(r, c, 64, 64)[2], vector_src.read(r, c, 64, 64)[2])
    coarse, step = vector_src.coarse_reference()
    assert step == 1 and (coarse == 3).sum() == 36
    with pytest.raises(InputError, match="no field 'klass'"):
        open_sources(TrainConfig(pairs=[{"image": pair.image, "vector": tmp_path / "ref.gpkg", "class_field": "klass"}], **cfg))


def test_unusable_inputs_are_refused_before_training(tmp_path):
    pair, img, ref = _three_class_pair(tmp_path)
    write_raster(tmp_path / "ref_small.tif", ref[:200], transform=from_origin(500000, 5100000, 10, 10))
    base = dict(classes=THREE, checkpoint=tmp_path / "m", tile_size=64)
    with pytest.raises(GridMismatchError, match="not on the grid"):
        train(TrainConfig(pairs=[{"image": pair.image, "reference": tmp_path / "ref_small.tif"}], **base))
    with pytest.raises(BandError, match="'red'"):
        train(TrainConfig(pairs=[pair], bands=["red"], **base))
    with pytest.raises(MissingFileError):
        train(TrainConfig(pairs=[{"image": tmp_path / "nope.tif", "reference": pair.reference}], **base))


def test_short_training_run_lowers_the_loss_and_writes_a_checkpoint(tmp_path):
    files = make_scene("landcover", tmp_path / "lc", width=256, height=256, seed=1, block=128)
    cfg = TrainConfig(
        pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(LANDCOVER_CLASSES),
        bands=["nir", "red", "green"], tile_size=64, tile_overlap=16, batch_size=6, epochs=3, steps_per_epoch=10,
        lr=2e-3, val_fraction=0.25, val_tiles=8, checkpoint=tmp_path / "out" / "lc", seed=3, **TINY,
    )
    t0 = time.perf_counter()
    result = train(cfg)
    print(f"\n3x10 steps: {time.perf_counter() - t0:.1f}s; curve "
          + ", ".join(f"{h['train_loss']:.3f}/{h['val_miou']:.3f}" for h in result.history))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(0 <= h["val_miou"] <= 1 for h in result.history)
    # the number of pixels the score stands on: at most 8 tiles of 64², all labelled in this scene
    assert len({h["val_px"] for h in result.history}) == 1 and 0 < result.history[0]["val_px"] <= 8 * 64 * 64
    # the kept epoch is where the EMA of val mIoU peaks (checkpoint_selection: smoothed); its own mIoU is reported
    best = max(result.history, key=lambda h: h["val_miou_ema"])
    assert result.best_epoch == best["epoch"] and result.best_val_miou == pytest.approx(best["val_miou"])
    assert json.loads(history_path(cfg.checkpoint).read_text()) == result.history
    assert result.history_path == tmp_path / "out" / "lc.history.json"

    meta = read_meta(cfg.checkpoint)
    assert meta.band_names == ["nir", "red", "green"] and meta.in_channels == 3
    assert meta.classes == list(LANDCOVER_CLASSES)
    assert meta.resolution == pytest.approx(10.0) and meta.tile_size == 64 and meta.tile_overlap == 16
    assert meta.training.epochs == 3 and meta.training.best_epoch == result.best_epoch
    assert meta.training.best_val_miou == pytest.approx(result.best_val_miou)
    with rasterio.open(files.image) as ds:
        data = ds.read([4, 3, 2]).astype(np.float32)
        valid = np.all(data != 0, axis=0)
    # Band statistics come from valid training pixels: close to the image's own.
    np.testing.assert_allclose(meta.band_mean, data[:, valid].mean(axis=1), rtol=0.25)
    model, meta = load_checkpoint(cfg.checkpoint)
    check_compatible(meta, ["nir", "red", "green"], 10.0)
    labels = predict_chunk(model, meta, data, valid, device="cpu")
    assert set(np.unique(labels[valid])) <= {c.id for c in LANDCOVER_CLASSES}
    assert (labels[~valid] == 255).all()


def test_training_with_vector_reference_and_a_loader_worker(tmp_path):
    import geopandas as gpd
    import shapely

    pair, _, _ = _three_class_pair(tmp_path, size=128)
    gdf = gpd.GeoDataFrame({"cls": [1, 2]}, geometry=[shapely.box(500000, 5098720, 500640, 5100000),
                                                      shapely.box(500640, 5098720, 501280, 5100000)], crs="EPSG:32633")
    gdf.to_file(tmp_path / "ref.gpkg", driver="GPKG")
    cfg = TrainConfig(pairs=[TrainPair(image=pair.image, vector=tmp_path / "ref.gpkg", class_field="cls")],
                      classes=THREE[:2], tile_size=64, batch_size=2, epochs=1, steps_per_epoch=2, val_fraction=0.0,
                      num_workers=1, checkpoint=tmp_path / "v", **TINY)
    result = train(cfg)
    assert result.best_epoch is None and result.history[0]["val_miou"] is None
    assert result.checkpoint.is_file() and read_meta(tmp_path / "v").training.epochs == 1


def test_validation_scores_match_scikit_learn_jaccard():
    from sklearn.metrics import confusion_matrix, jaccard_score

    rng = np.random.default_rng(4)
    ref = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.6, ref, rng.integers(0, 4, 500))
    miou, iou = validation_scores(confusion_matrix(ref, pred, labels=range(4)))
    np.testing.assert_allclose(iou, jaccard_score(ref, pred, labels=range(4), average=None))
    assert miou == pytest.approx(jaccard_score(ref, pred, labels=range(4), average="macro"))
    # A class absent from reference and prediction is left out of the mean (scikit-learn would count it as 0).
    conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    miou, iou = validation_scores(conf)
    assert iou[0] == pytest.approx(5 / 8) and iou[1] == pytest.approx(3 / 6) and np.isnan(iou[2])
    assert miou == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert validation_scores(np.zeros((2, 2), np.int64))[0] is None


# --- crop versus weed: context beats spectra ---------------------------------------------------------


def kmeans_weed_iou(img: np.ndarray, ref: np.ndarray, rows: slice, seed: int = 0) -> tuple[float, np.ndarray]:
    """Best achievable weed IoU of 3-cluster k-means on pixel spectra, clusters matched to classes (Hungarian)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    x = img.reshape(img.shape[0], -1).T.astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    rng = np.random.default_rng(seed)
    km = KMeans(3, n_init=4, random_state=seed).fit((x[rng.choice(len(x), 20000, replace=False)] - mean) / std)
    held = img[:, rows].reshape(img.shape[0], -1).T
    lab = km.predict((held - mean) / std)
    r = ref[rows].ravel().astype(np.int64) - 1
    conf = np.zeros((3, 3))
    np.add.at(conf, (r, lab), 1)
    iou = conf / (conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf)
    ri, ci = linear_sum_assignment(-iou)
    matched = iou[ri, ci]
    return float(matched[list(ri).index(2)]), matched


@pytest.mark.slow  # 9 s on an idle core, 2 min on the shared CI machine; test_short_training_run is the smoke test
def test_deeplab_separates_weeds_that_kmeans_cannot(tmp_path):
    """On a 1 cm crop/weed scene a small CPU-trained DeepLabV3+ beats spectral k-means on weeds, held-out rows."""
    files = make_scene("cropweed", tmp_path / "cw", width=512, height=512, seed=0, block=256)
    cfg = TrainConfig(
        pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(CROPWEED_CLASSES),
        encoder="resnet18", encoder_depth=3, decoder_channels=32, tile_size=96, tile_overlap=24, batch_size=8,
        epochs=4, steps_per_epoch=16, lr=1e-3, val_fraction=0.25, val_tiles=24, norm_windows=8,
        checkpoint=tmp_path / "cw_model", seed=0, progress=False,
    )
    t0 = time.perf_counter()
    result = train(cfg)
    t_train = time.perf_counter() - t0
    with rasterio.open(files.image) as ds:
        img = ds.read().astype(np.float32)
    with rasterio.open(files.reference) as ds:
        ref = ds.read(1)
    split = 384  # the held-out rows: never seen in training
    model, meta = load_checkpoint(cfg.checkpoint)
    whole = image_statistics(img, np.ones((512, 512), bool), NetworkChannels(img.shape[0], meta.indices()))
    pred = predict_chunk(model, meta, img[:, split:], np.ones((512 - split, 512), bool), origin=(split, 0), device="cpu",
                         scene_stats=whole)  # rows of the scene, normalised by the scene's statistics
    from sklearn.metrics import jaccard_score

    dl_iou = jaccard_score(ref[split:].ravel(), pred.ravel(), labels=[1, 2, 3], average=None)
    km_weed, km_iou = kmeans_weed_iou(img, ref, slice(split, None))
    print(f"\ncrop/weed held-out IoU (soil, crop, weed): deeplab {np.round(dl_iou, 3).tolist()}, "
          f"k-means {np.round(km_iou, 3).tolist()}; training {t_train:.0f}s, best epoch {result.best_epoch}")
    assert dl_iou[2] > km_weed + 0.2
    assert dl_iou[1] > 0.6
