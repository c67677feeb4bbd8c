"""Masks are validity, never features: alpha bands, GDAL internal masks, QA rules."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.masks import QARule
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.features import FeatureSpec
from geoseg.run.jobspec import parse_job
from geoseg.run.labelling import sample_task
from geoseg.run.workflow import run_job
from tests.fixtures import SPECTRA, blocky_classes

GARBAGE = (255, 0, 255)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = blocky_classes(h, w)
    img = SPECTRA[classes][..., :3].transpose(2, 0, 1) / 8 + rng.normal(0, 4, (3, h, w))
    return np.clip(img, 1, 250).astype(np.uint8)


def _alpha(h: int, w: int) -> np.ndarray:
    a = np.full((h, w), 255, np.uint8)
    a[:40, :] = 0
    a[100:130, 200:260] = 0
    return a


def write_rgba(path, h: int = 256, w: int = 320):
    """An RGBA drone-like file: alpha = 0 pixels carry garbage colour that must never be used."""
    rgb, alpha = _rgb(h, w), _alpha(h, w)
    rgb[:, alpha == 0] = np.array(GARBAGE, np.uint8)[:, None]
    profile = dict(driver="GTiff", width=w, height=h, count=4, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5100000, 0.05, 0.05), tiled=True, blockxsize=128,
                   blockysize=128, photometric="RGB", alpha="YES")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.concatenate([rgb, alpha[None]]))
    return path, alpha


def write_internal_mask(path, h: int = 256, w: int = 320):
    """An RGB file with a GDAL internal mask and no nodata value; masked pixels carry garbage."""
    rgb, mask = _rgb(h, w, 1), _alpha(h, w)
    rgb[:, mask == 0] = np.array(GARBAGE, np.uint8)[:, None]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5100000, 0.05, 0.05), tiled=True, blockxsize=128, blockysize=128)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(rgb)
            ds.write_mask(mask)
    return path, mask


@pytest.mark.parametrize("writer", [write_rgba, write_internal_mask])
def test_mask_is_validity_and_alpha_is_not_a_band(tmp_path, writer):
    path, mask = writer(tmp_path / "f.tif")
    scene = open_scene(str(path))
    assert scene.count == 3  # alpha dropped
    with rasterio.open(path) as ds:  # oracle: GDAL's own mask
        gdal_valid = ds.read_masks(1) != 0
        rgb = ds.read([1, 2, 3]).astype(np.float32)
    assert (gdal_valid == (mask != 0)).all()
    values, valid = read_window(scene, Window(0, 0, scene.height, scene.width))
    np.testing.assert_array_equal(valid, gdal_valid)
    np.testing.assert_array_equal(values, rgb)


@pytest.mark.parametrize("writer", [write_rgba, write_internal_mask])
def test_masked_pixels_are_nodata_labels_and_never_sampled(tmp_path, dask_client, writer):
    path, mask = writer(tmp_path / "f.tif")
    scene = open_scene(str(path))
    feats = FeatureSpec().resolve(scene.band_names)
    sample = np.concatenate([sample_task(scene, feats, w, 1.0, 0) for w in scene.chunk_grid(128).windows()])
    assert len(sample) == int((mask != 0).sum())  # every valid pixel, and only those
    assert not (sample == np.array(GARBAGE, np.float32)).all(axis=1).any()

    job = parse_job({"name": "m", "inputs": [str(path)], "output": str(tmp_path / "out"), "chunk_size": 128,
                     "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000},
                     "vectorize": {"enabled": False}})
    run_job(job, client=dask_client, show_progress=False)
    with rasterio.open(tmp_path / "out" / "labels.zarr") as ds:
        labels = ds.read(1)
    np.testing.assert_array_equal(labels == 255, mask == 0)


def test_qa_rule_values_and_bits_against_numpy():
    rng = np.random.default_rng(0)
    qa = rng.integers(0, 2**16, (50, 60), dtype=np.uint16)
    rule = QARule(drop_values=(7, 300), drop_bits=(3, 15))
    expected = np.isin(qa, [7, 300]) | ((qa >> 3) & 1).astype(bool) | ((qa >> 15) & 1).astype(bool)
    np.testing.assert_array_equal(rule.invalid(qa), expected)


@pytest.mark.parametrize(
    "rule, dtype, message",
    [(QARule(drop_bits=(8,)), "uint8", "beyond its uint8"), (QARule(drop_values=(300,)), "uint8", "cannot occur"),
     (QARule(drop_values=(1,)), "float32", "integer"), (QARule(), "uint8", "drops nothing")],
)
def test_bad_qa_rules_are_refused(rule, dtype, message):
    with pytest.raises(InputError, match=message):
        rule.check(dtype, "mask 'qa'")


def test_a_named_band_that_gdal_marks_alpha_stays_a_value_band(tmp_path):
    """GDAL writes the 4th band of a 4-band 8-bit RGB file as alpha; named 'nir' it is data, not a mask."""
    rgbn = np.full((4, 130, 130), 9, np.uint8)
    rgbn[3, :, :65] = 0  # zero nir values are data here, not transparency
    profile = {"driver": "GTiff", "width": 130, "height": 130, "count": 4, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 5100000, 0.05, 0.05), "photometric": "RGB", "alpha": "YES"}
    with rasterio.open(tmp_path / "rgbn.tif", "w", **profile) as ds:
        ds.write(rgbn)
        ds.descriptions = ("red", "green", "blue", "nir")
    with rasterio.open(tmp_path / "rgbn.tif") as ds:
        assert ds.colorinterp[3].name == "alpha"  # what GDAL says
    scene = open_scene(str(tmp_path / "rgbn.tif"))
    assert scene.band_names == ("red", "green", "blue", "nir")
    values, valid = read_window(scene, Window(0, 0, 130, 130))
    assert valid.all() and (values[3, :, :65] == 0).all()
