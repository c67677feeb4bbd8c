"""Is a scene like the training images? The envelope against numpy, the distance and its message, the sidecar field,
and on the real Slovenia dates: a network trained on summer dates is warned of the winter one, not of another
summer date."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio

from geoseg.legend import ClassInfo
from geoseg.methods.checkpoint import CheckpointMeta, read_meta
from geoseg.methods.familiarity import UNFAMILIAR_STDS, TrainingEnvelope, familiarity
from geoseg.methods.scenestats import NetworkChannels, image_statistics


def test_the_envelope_is_the_range_of_the_images_means_and_their_mean_std():
    rng = np.random.default_rng(0)
    stats = [(rng.normal(size=3), rng.uniform(0.5, 2, size=3)) for _ in range(4)]
    env = TrainingEnvelope.of(["a", "b", "c"], stats)
    means, stds = np.array([m for m, _ in stats]), np.array([s for _, s in stats])
    np.testing.assert_allclose(env.mean_low, means.min(axis=0))
    np.testing.assert_allclose(env.mean_high, means.max(axis=0))
    np.testing.assert_allclose(env.within_std, stds.mean(axis=0))
    assert env.images == 4


def test_a_fine_tuned_networks_envelope_spans_both_sets_of_images():
    rng = np.random.default_rng(1)
    first = [(rng.normal(size=2), rng.uniform(0.5, 2, size=2)) for _ in range(3)]
    then = [(rng.normal(size=2), rng.uniform(0.5, 2, size=2)) for _ in range(2)]
    merged = TrainingEnvelope.of(["B04", "B08"], first).merged(TrainingEnvelope.of(["b04", "b08"], then))
    whole = TrainingEnvelope.of(["b04", "b08"], first + then)
    assert merged.channels == ["b04", "b08"] and merged.images == 5
    for key in ("mean_low", "mean_high", "within_std"):
        np.testing.assert_allclose(getattr(merged, key), getattr(whole, key))
    with pytest.raises(ValueError, match="other channels"):
        TrainingEnvelope.of(["B04", "B08"], first).merged(TrainingEnvelope.of(["B08", "B04"], then))


def test_distance_is_zero_inside_and_counted_in_within_image_stds_outside():
    env = TrainingEnvelope(channels=["red", "nir", "ndvi"], mean_low=[0.04, 0.20, 0.5], mean_high=[0.08, 0.30, 0.7],
                           within_std=[0.02, 0.05, 0.1], images=3)
    inside = familiarity(env, [0.05, 0.25, 0.6])
    assert inside.distance == (0.0, 0.0, 0.0) and inside.unfamiliar == [] and inside.message() is None
    outside = familiarity(env, [0.20, 0.10, 0.1])  # red 6 stds above, nir 2 below, ndvi 4 below
    np.testing.assert_allclose(outside.distance, [6.0, 2.0, 4.0])
    assert outside.unfamiliar == ["red"]
    line = outside.message("the scene")
    assert line is not None and "\n" not in line
    assert "the scene is unlike the 3 image(s)" in line and "mean red is 0.2" in line and "0.04 to 0.08" in line
    assert "6.0 within-image standard deviations" in line
    both = familiarity(env, [0.20, 0.30 + 0.05 * 7, 0.6])  # red 6, nir 7: the farthest is named, both counted
    assert both.unfamiliar == ["nir", "red"]
    assert "mean nir" in (both.message() or "") and "2 of 3 channels" in (both.message() or "")
    with pytest.raises(ValueError, match="2 scene means for 3 channels"):
        familiarity(env, [0.1, 0.2])


def _meta(**update) -> CheckpointMeta:
    return CheckpointMeta(in_channels=2, band_names=["red", "nir"], band_mean=[0.1, 0.3], band_std=[0.05, 0.1],
                          classes=[ClassInfo(1, "a", "#000000"), ClassInfo(2, "b", "#ffffff")], tile_size=64,
                          tile_overlap=16, **update)


def test_the_sidecar_keeps_the_envelope_and_refuses_one_of_another_width(tmp_path):
    env = TrainingEnvelope(channels=["red", "nir"], mean_low=[0.04, 0.2], mean_high=[0.08, 0.3],
                           within_std=[0.02, 0.05], images=2)
    side = tmp_path / "m.json"
    side.write_text(_meta(normalisation="scene", training_envelope=env).to_json())
    assert read_meta(tmp_path / "m").training_envelope == env
    side.write_text(_meta().to_json())  # a sidecar written before the envelope existed: none, nothing checked
    assert read_meta(tmp_path / "m").training_envelope is None
    narrow = env.model_copy(update={"channels": ["red"], "mean_low": [0.04], "mean_high": [0.08], "within_std": [0.02]})
    with pytest.raises(ValueError, match="training_envelope has 1 channels, the network 2"):
        _meta(training_envelope=narrow)
    with pytest.raises(ValueError, match="within-image stds must be positive"):
        TrainingEnvelope(channels=["red"], mean_low=[0.0], mean_high=[0.1], within_std=[0.0], images=1)


@pytest.mark.integration
def test_a_network_trained_on_summer_dates_is_warned_of_the_winter_date_only(realdata, tmp_path, caplog):
    """Slovenia: dates 2 and 3 train, the winter date 0 validates (warned at training), and at inference the winter
    date is unfamiliar while the summer date 4 is not, by the scenes' own statistics against numpy's."""
    from geoseg.methods.training import TrainConfig, TrainPair, train

    ref = realdata / "lulc_reference.tif"
    scene = lambda i: realdata / f"s2_l1c_reference_scene_{i}.tif"  # noqa: E731
    classes = [ClassInfo(i, n, "#808080") for i, n in ((1, "cultivated"), (2, "forest"), (3, "grassland"),
                                                       (4, "shrubland"), (8, "artificial"))]
    cfg = TrainConfig(pairs=[TrainPair(image=scene(i), reference=ref) for i in (2, 3)],
                      val_pairs=[TrainPair(image=scene(0), reference=ref)], classes=classes,
                      index_channels=["(B08 - B04) / (B08 + B04)"], encoder_depth=3, decoder_channels=16,
                      refine_channels=8, tile_size=64, batch_size=2, epochs=1, steps_per_epoch=2, val_tiles=2,
                      norm_windows=4, baselines=False, device="cpu", progress=False, checkpoint=tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        train(cfg)
    warned = [r.getMessage() for r in caplog.records if "unlike the 2 image(s)" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("validation image s2_l1c_reference_scene_0.tif")

    meta = read_meta(cfg.checkpoint)
    env = meta.training_envelope
    assert env is not None and env.images == 2

    def channels(i: int) -> tuple[np.ndarray, np.ndarray]:
        with rasterio.open(scene(i)) as ds:
            raw = ds.read().astype(np.float32)
        return image_statistics(raw, np.ones(raw.shape[1:], bool), NetworkChannels(raw.shape[0], meta.indices()))

    own = [channels(i) for i in (2, 3)]
    np.testing.assert_allclose(env.mean_low, np.minimum(own[0][0], own[1][0]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(env.mean_high, np.maximum(own[0][0], own[1][0]), rtol=1e-4, atol=1e-7)
    winter, summer = familiarity(env, channels(0)[0]), familiarity(env, channels(4)[0])
    assert max(winter.distance) > 2 * UNFAMILIAR_STDS and winter.unfamiliar
    assert max(summer.distance) < UNFAMILIAR_STDS and summer.message() is None
