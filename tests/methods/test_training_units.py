"""Training reads values in the units inference gives the network, and a checkpoint says which units it learned.

A GeoTIFF storing digital numbers with a scale in its band metadata (Landsat, Sentinel-2 L2A) is read as
physical values by inference; training must learn on the same values, or every label is silently wrong.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import ModelInputError
from geoseg.io.scene import open_scene
from geoseg.legend import CROPWEED_CLASSES
from geoseg.methods.checkpoint import read_meta
from geoseg.methods.training import TrainConfig, TrainPair, train
from geoseg.run.methods.deeplab import DeepLabConfig, check_deeplab_job
from geoseg.samples.synthetic import make_scene

torch.set_num_threads(1)

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=16, progress=False, tile_size=64, tile_overlap=16,
            batch_size=2, epochs=1, steps_per_epoch=1, val_fraction=0.25, val_tiles=2, norm_windows=4, seed=0)
SCALE = 0.01


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The generated scene as it is (uint8), and the same values stored as DN × 100 in uint16 with scale 0.01."""
    folder = tmp_path_factory.mktemp("units")
    files = make_scene("cropweed", folder / "cw", width=128, height=128, seed=0, block=128)
    with rasterio.open(files.image) as ds:
        profile, data = ds.profile, ds.read()
    dn = folder / "dn.tif"
    with rasterio.open(dn, "w", **{**profile, "dtype": "uint16"}) as out:
        out.write(data.astype(np.uint16) * 100)
        out.scales = (SCALE,) * data.shape[0]
        out.descriptions = ("red", "green", "blue", "nir")
    return files, dn


def _train(image, reference, checkpoint, **kw):
    cfg = TrainConfig(pairs=[TrainPair(image=image, reference=reference)], classes=list(CROPWEED_CLASSES),
                      checkpoint=checkpoint, **TINY, **kw)
    train(cfg)
    return read_meta(checkpoint), checkpoint


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    files, dn = scenes
    folder = tmp_path_factory.mktemp("units-models")
    return {
        "plain": _train(files.image, files.reference, folder / "plain"),
        "scaled": _train(dn, files.reference, folder / "scaled"),
        "stored": _train(dn, files.reference, folder / "stored", apply_scale=False),
    }


def test_training_applies_the_files_scale_like_inference(trained):
    plain, _ = trained["plain"]
    scaled, _ = trained["scaled"]
    stored, _ = trained["stored"]
    # the same windows (same seed): the statistics of DN x 0.01 equal those of the values themselves
    np.testing.assert_allclose(scaled.band_mean, plain.band_mean, rtol=1e-5)
    np.testing.assert_allclose(scaled.band_std, plain.band_std, rtol=1e-4)
    np.testing.assert_allclose(stored.band_mean, np.array(plain.band_mean) / SCALE, rtol=1e-5)
    assert (plain.scale_applied, scaled.scale_applied, stored.scale_applied) == (True, True, False)


def _check(checkpoint, entry) -> None:
    check_deeplab_job(DeepLabConfig(checkpoint=checkpoint), open_scene([entry]))


def test_a_model_of_stored_numbers_refuses_an_input_geoseg_would_scale(trained, scenes):
    _, dn = scenes
    _, stored = trained["stored"]
    with pytest.raises(ModelInputError, match=r"trained on stored numbers \(with `apply_scale: false`\).*"
                                              r"set `apply_scale: false` on the inputs"):
        _check(stored, str(dn))
    _check(stored, {"path": str(dn), "apply_scale": False})  # the same units as in training: accepted
    _, scaled = trained["scaled"]
    _check(scaled, str(dn))


def test_a_sidecar_older_than_the_record_is_taken_as_stored_numbers(trained, scenes, tmp_path):
    _, dn = scenes
    _, scaled = trained["scaled"]
    old = tmp_path / "old"
    side = json.loads(scaled.with_suffix(".json").read_text())
    del side["scale_applied"]
    old.with_suffix(".json").write_text(json.dumps(side))
    old.with_suffix(".safetensors").write_bytes(scaled.with_suffix(".safetensors").read_bytes())
    assert read_meta(old).scale_applied is None
    with pytest.raises(ModelInputError, match="before geoseg applied scale/offset in training"):
        _check(old, str(dn))
    files, _ = scenes
    _check(old, str(files.image))  # a file without scale metadata: nothing to disagree on


def test_a_pairs_scale_gives_the_units_a_file_does_not_declare(trained, scenes, tmp_path):
    """The same DN × 100 stored without a scale in the file (a Sentinel-2 item's units live in its catalog): the
    pair's `scale:` makes training read the values, as an input's `scale:` makes inference read them."""
    from pydantic import ValidationError

    files, dn = scenes
    bare = tmp_path / "bare.tif"
    with rasterio.open(dn) as ds:
        profile, data, descriptions = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(bare, "w", **profile) as out:
        out.write(data)
        out.descriptions = descriptions
    cfg = TrainConfig(pairs=[TrainPair(image=bare, reference=files.reference, scale=SCALE)],
                      classes=list(CROPWEED_CLASSES), checkpoint=tmp_path / "given", **TINY)
    train(cfg)
    plain, _ = trained["plain"]
    given = read_meta(tmp_path / "given")
    np.testing.assert_allclose(given.band_mean, plain.band_mean, rtol=1e-5)
    assert given.scale_applied is True
    with pytest.raises(ValidationError, match="every value the same"):
        TrainPair(image=bare, reference=files.reference, scale=0)
    with pytest.raises(ValidationError, match="contradict"):
        TrainConfig.model_validate({**cfg.model_dump(), "apply_scale": False})
