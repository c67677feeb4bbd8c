"""Index channels as network inputs: training records them, inference computes them the same way, old sidecars load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import BandRoleError, ModelError
from geoseg.legend import CROPWEED_CLASSES
from geoseg.methods.checkpoint import load_checkpoint, read_meta, save_checkpoint
from geoseg.methods.deeplab import meta_input, predict_chunk
from geoseg.methods.training import TrainConfig, TrainPair, train
from geoseg.samples.synthetic import make_scene
from tests.fixtures import tiny_meta, tiny_model, write_raster

# One thread: the test machine has two cores shared with other work.
torch.set_num_threads(1)

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=16, progress=False, tile_size=64, tile_overlap=16,
            batch_size=2, epochs=1, steps_per_epoch=2, val_fraction=0.25, val_tiles=2, norm_windows=4, seed=0)


def _exg(img: np.ndarray) -> np.ndarray:
    """ExG by hand, in float64: (2 G - R - B) / (R + G + B), with the 1e-6 geoseg's named index adds."""
    r, g, b = (img[i].astype(np.float64) for i in range(3))
    return (2 * g - r - b) / (r + g + b + 1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DeepLabV3+ trained with ``index_channels: [exg]`` on a 4-band crop/weed scene."""
    folder = tmp_path_factory.mktemp("idx")
    files = make_scene("cropweed", folder / "cw", width=128, height=128, seed=0, block=128)
    cfg = TrainConfig(pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(CROPWEED_CLASSES),
                      checkpoint=folder / "m", index_channels=["exg"], normalisation="training", **TINY)
    return files, cfg, train(cfg)


def test_training_records_the_index_channels_in_the_sidecar(trained):
    files, cfg, result = trained
    meta = read_meta(cfg.checkpoint)
    assert meta.band_names == ["red", "green", "blue", "nir"] and meta.in_channels == 5
    [ch] = meta.index_channels
    assert (ch.text, ch.needs, ch.bands) == ("exg", ["red", "green", "blue"], [0, 1, 2])
    side = json.loads(cfg.checkpoint.with_suffix(".json").read_text())
    assert [c["text"] for c in side["index_channels"]] == ["exg"]
    # its statistics come from valid training windows: near the ExG of the training rows (computed by hand)
    with rasterio.open(files.image) as ds:
        img = ds.read()
    exg = _exg(img[:, :96])
    assert abs(ch.mean - exg.mean()) < 0.25 * exg.std() and 0.5 < ch.std / exg.std() < 2
    model, _ = load_checkpoint(cfg.checkpoint)
    assert next(model.parameters()).shape[1] == 5  # the first convolution takes bands + ExG


def test_network_input_is_the_bands_then_exg_standardised_with_the_sidecar_statistics(trained):
    files, cfg, _ = trained
    meta = read_meta(cfg.checkpoint)
    with rasterio.open(files.image) as ds:
        img = ds.read(window=((10, 74), (20, 90))).astype(np.float32)
    valid = np.ones(img.shape[1:], bool)
    valid[:3, :4] = False
    x = meta_input(img, valid, meta)
    bands = (img - np.array(meta.band_mean, np.float32)[:, None, None]) / np.array(meta.band_std, np.float32)[:, None, None]
    ch = meta.index_channels[0]
    want = np.concatenate([bands, ((_exg(img) - ch.mean) / ch.std)[None]])
    want[:, ~valid] = 0
    assert x.shape == (5, *img.shape[1:]) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)


def test_fine_tuning_keeps_the_index_channels_and_refuses_others(trained, tmp_path):
    files, cfg, _ = trained
    first = read_meta(cfg.checkpoint)
    base = cfg.model_dump(exclude={"checkpoint", "index_channels", "init_checkpoint"})
    with pytest.raises(ModelError, match=r"trained with index channels \['exg'\], the job asks for none"):
        train(TrainConfig(**base, checkpoint=tmp_path / "ft", init_checkpoint=cfg.checkpoint))
    with pytest.raises(ModelError, match=r"index channels \['exg'\], the job asks for \['ndvi'\]"):
        train(TrainConfig(**base, checkpoint=tmp_path / "ft", init_checkpoint=cfg.checkpoint, index_channels=["ndvi"]))
    assert not (tmp_path / "ft.safetensors").exists()
    train(TrainConfig(**{**base, "epochs": 1, "steps_per_epoch": 1}, checkpoint=tmp_path / "ft",
                      init_checkpoint=cfg.checkpoint, index_channels=["EXG"]))
    tuned = read_meta(tmp_path / "ft")
    assert tuned.index_channels == first.index_channels  # the statistics the weights learned on are kept


def test_training_refuses_an_image_without_the_roles_an_index_needs(tmp_path):
    rng = np.random.default_rng(0)
    write_raster(tmp_path / "img.tif", rng.integers(1, 255, (3, 64, 64)).astype("uint8"),
                 descriptions=("red", "green", "blue"))
    write_raster(tmp_path / "ref.tif", rng.integers(1, 4, (64, 64)).astype("uint8"))
    cfg = TrainConfig(pairs=[TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif")],
                      classes=list(CROPWEED_CLASSES), checkpoint=tmp_path / "m", index_channels=["exg", "ndvi"],
                      **{**TINY, "val_fraction": 0.0})
    with pytest.raises(BandRoleError, match=r"img\.tif: index channel 'ndvi': no band has the role 'nir'"):
        train(cfg)
    assert not (tmp_path / "m.json").exists()


def test_a_sidecar_written_before_index_channels_loads_with_none(tmp_path):
    meta = tiny_meta()
    save_checkpoint(tiny_model(meta), meta, tmp_path / "old")
    side = json.loads((tmp_path / "old.json").read_text())
    del side["index_channels"], side["normalisation"]  # as every sidecar written before the fields existed
    (tmp_path / "old.json").write_text(json.dumps(side))
    model, old = load_checkpoint(tmp_path / "old")
    assert old.index_channels == [] and old.in_channels == 4 and old.normalisation == "training"
    img = np.random.default_rng(0).normal(110, 30, (4, 40, 40)).astype(np.float32)
    valid = np.ones((40, 40), bool)
    np.testing.assert_array_equal(meta_input(img, valid, old)[:4], meta_input(img, valid, meta))
    assert predict_chunk(model, old, img, valid, device="cpu").shape == (40, 40)
