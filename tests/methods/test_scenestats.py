"""Per-scene statistics (``normalisation: scene``): the numbers against numpy, and what they buy (a brighter date
gives the network the same input)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.geo import GeoGrid
from geoseg.methods.deeplab import network_input
from geoseg.methods.indices import resolve_index
from geoseg.methods.scenestats import (
    NetworkChannels,
    channel_statistics,
    image_statistics,
    sample_file_channels,
)


def _scene(seed: int = 0, shape: tuple[int, int] = (90, 70)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.gamma(2.0, 0.05, size=(4, *shape)).astype(np.float32) + np.float32(0.01)
    valid = rng.random(shape) > 0.2
    return img, valid


def test_statistics_are_numpys_over_the_valid_pixels_and_finite_index_values():
    img, valid = _scene()
    img[1, 3, 4] = 0.0
    img[3, 3, 4] = 0.0  # 0/0 NDVI at one valid pixel: left out of that channel only
    valid[3, 4] = True
    ndvi = resolve_index("(b4 - b2) / (b4 + b2)", ["b1", "b2", "b3", "b4"])
    mean, std = image_statistics(img, valid, NetworkChannels(4, (ndvi,)))
    bands = img[:, valid].astype(np.float64)
    np.testing.assert_allclose(mean[:4], bands.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std[:4], bands.std(axis=1), rtol=1e-4)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = ((img[3] - img[1]) / (img[3] + img[1]))[valid].astype(np.float64)
    assert np.isnan(index).sum() == 1
    np.testing.assert_allclose(mean[4], np.nanmean(index), rtol=1e-5)
    np.testing.assert_allclose(std[4], np.nanstd(index), rtol=1e-4)


def test_a_channel_without_a_finite_value_is_refused_by_name():
    sample = np.array([[1.0, np.nan], [2.0, np.nan]])
    with pytest.raises(InputError, match="no valid pixel with a finite channel 'ndvi'"):
        channel_statistics(sample, ["red", "ndvi"])


def test_a_brighter_date_gives_the_network_the_same_input():
    """Another date of the same fields: every band with its own gain and offset (haze, sun). Standardised by each
    scene's own statistics both give the same channels, bands and the index alike; by fixed statistics they do not."""
    img, valid = _scene(1)
    gain = np.array([1.3, 1.1, 0.9, 1.25], np.float32)[:, None, None]
    offset = np.array([0.02, 0.01, 0.0, 0.03], np.float32)[:, None, None]
    later = img * gain + offset
    index = resolve_index("(b4 - b1) / (b4 + b1)", ["b1", "b2", "b3", "b4"])
    channels = NetworkChannels(4, ())
    a = network_input(img, valid, *image_statistics(img, valid, channels))
    b = network_input(later, valid, *image_statistics(later, valid, channels))
    np.testing.assert_allclose(a, b, atol=2e-4)
    fixed = image_statistics(img, valid, channels)
    assert np.abs(network_input(later, valid, *fixed) - a)[:, valid].mean() > 0.5
    # an index is not affine in the bands: per-scene standardisation centres it, it cannot make it equal
    with_index = NetworkChannels(4, (index,))
    c = network_input(img, valid, *image_statistics(img, valid, with_index), (index,))
    d = network_input(later, valid, *image_statistics(later, valid, with_index), (index,))
    assert abs(c[4][valid].mean() - d[4][valid].mean()) < 1e-5


def test_a_file_read_chunk_by_chunk_gives_the_whole_images_statistics():
    """A training image smaller than the sample is taken whole: the same numbers as the image in memory, read in
    chunks of the sampling grid (here several, with SAMPLE_CHUNK patched small)."""
    from unittest import mock

    from affine import Affine

    img, valid = _scene(2, (50, 45))
    from rasterio.crs import CRS

    grid = GeoGrid(50, 45, Affine(10, 0, 0, 0, -10, 500), CRS.from_epsg(32633).to_wkt())
    reads = []

    def read(window):
        reads.append(window)
        rows = slice(window.row_off, window.row_off + window.height)
        cols = slice(window.col_off, window.col_off + window.width)
        return img[:, rows, cols], valid[rows, cols]

    channels = NetworkChannels(4, ())
    with mock.patch("geoseg.methods.sampling.SAMPLE_CHUNK", 16):
        sample = sample_file_channels(read, grid, channels)
    assert len(reads) == 4 * 3 and len(sample) == valid.sum()
    np.testing.assert_allclose(channel_statistics(sample), image_statistics(img, valid, channels), rtol=1e-5)


def test_training_normalises_each_image_by_its_own_statistics_and_names_one_class_images(tmp_path, caplog):
    """Two dates of the same field (the second brighter, band by band): each training image gets numpy's mean and
    std over its own pixels, so the same window of both reaches the network as the same channels; an image that
    is all one class is named in a warning (its pixels would be stretched to one class's spread)."""
    import logging

    import rasterio

    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.training import TrainConfig, TrainPair
    from geoseg.methods.training.data import open_sources
    from geoseg.methods.training.loop import _prepare_data
    from geoseg.samples.synthetic import make_scene
    from tests.fixtures import write_raster

    files = make_scene("cropweed", tmp_path / "cw", width=96, height=96, seed=4, block=32)
    with rasterio.open(files.image) as ds:
        raw, transform, crs, desc = ds.read().astype(np.float64), ds.transform, ds.crs, ds.descriptions
    gain, offset = np.array([1.3, 1.2, 1.1, 1.25])[:, None, None], np.array([0.03, 0.02, 0.02, 0.01])[:, None, None]
    later = raw * gain + offset
    write_raster(tmp_path / "later.tif", later.astype(np.float32), transform=transform, crs=crs.to_string(),
                 descriptions=desc)
    write_raster(tmp_path / "soil.tif", np.ones((1, 96, 96), np.uint8), transform=transform, crs=crs.to_string())
    cfg = TrainConfig(pairs=[TrainPair(image=files.image, reference=files.reference),
                             TrainPair(image=tmp_path / "later.tif", reference=files.reference),
                             TrainPair(image=files.image, reference=tmp_path / "soil.tif")],
                      classes=list(CROPWEED_CLASSES), normalisation="scene", tile_size=32, norm_windows=4,
                      checkpoint=tmp_path / "m")
    train_src, val_src = open_sources(cfg)
    with caplog.at_level(logging.WARNING):
        data = _prepare_data(cfg, train_src, val_src, np.random.default_rng(0))
    for (mean, std), img in zip(data.train_stats[:2], (raw, later)):
        np.testing.assert_allclose(mean, img.reshape(4, -1).mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(std, img.reshape(4, -1).std(axis=1), rtol=1e-4)
    a, valid, _ = train_src[0].read(10, 20, 32, 32)
    b, _, _ = train_src[1].read(10, 20, 32, 32)
    np.testing.assert_allclose(network_input(a, valid, *data.train_stats[0]), network_input(b, valid, *data.train_stats[1]),
                               atol=2e-4)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = [m for m in warned if "one class" in m]
    assert len(named) == 1 and "1 of 3 training images (cropweed_image.tif)" in named[0], warned
    assert "normalisation: training" in named[0]


def test_a_chunk_of_a_scene_without_the_scenes_statistics_is_refused():
    """``predict_chunk`` takes the image it is given as the whole scene; a chunk placed in a larger scene (an origin
    or a core) would be normalised by its own pixels, another input than the run's: refused instead. Given the
    image's own statistics, the labels are those of the image taken whole."""
    import torch

    from geoseg.methods.deeplab import predict_chunk
    from tests.fixtures import tiny_meta, tiny_model

    torch.set_num_threads(1)
    meta = tiny_meta(normalisation="scene")
    model = tiny_model(meta)
    rng = np.random.default_rng(5)
    img = rng.normal(110, 30, (4, 96, 96)).astype(np.float32)
    img[:, 48:] += 40  # the lower half brighter: its own statistics are not the scene's
    valid = np.ones((96, 96), bool)
    with pytest.raises(ValueError, match="scene_stats"):
        predict_chunk(model, meta, img[:, 48:], valid[48:], origin=(48, 0), device="cpu")
    whole = predict_chunk(model, meta, img, valid, device="cpu")
    stats = image_statistics(img, valid, NetworkChannels(4))
    np.testing.assert_array_equal(predict_chunk(model, meta, img, valid, device="cpu", scene_stats=stats), whole)
    alone = predict_chunk(model, meta, img[:, 48:], valid[48:], device="cpu")  # taken as a scene of its own
    assert alone.shape == (48, 96)


def test_an_image_split_into_training_and_validation_rows_is_read_once_for_its_statistics(tmp_path, monkeypatch):
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.training import TrainConfig, TrainPair
    from geoseg.methods.training.data import TrainSource, open_sources
    from geoseg.methods.training.loop import _prepare_data
    from geoseg.samples.synthetic import make_scene

    files = make_scene("cropweed", tmp_path / "cw", width=96, height=96, seed=6, block=32)
    cfg = TrainConfig(pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(CROPWEED_CLASSES),
                      val_fraction=0.25, tile_size=32, norm_windows=2, val_tiles=2, checkpoint=tmp_path / "m")
    train_src, val_src = open_sources(cfg)
    assert len(train_src) == len(val_src) == 1  # the same file, rows split
    calls: list[object] = []
    real = TrainSource.scene_statistics
    monkeypatch.setattr(TrainSource, "scene_statistics", lambda self, *a: calls.append(self) or real(self, *a))
    data = _prepare_data(cfg, train_src, val_src, np.random.default_rng(0))
    assert len(calls) == 1 and all(s is data.train_stats[0] for s in data.val_stats)
