"""Training finds band roles from sensor band numbers as a job does: ``sensor:``, or Sentinel-2 implied by ``B8A``."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import InputError
from geoseg.legend import CROPWEED_CLASSES
from geoseg.methods.training import TrainConfig, TrainPair
from geoseg.methods.training.data import open_sources, resolve_index_channels


def _bands_file(path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=len(names), dtype="float32",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000)) as ds:
        ds.write(rng.random((len(names), 128, 128), dtype=np.float32))
        ds.descriptions = tuple(names)


def _reference(path) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000)) as ds:
        ds.write(np.tile(np.arange(128, dtype=np.uint8) % 3 + 1, (128, 1))[None])


def _ndvi_reads(image, reference, **kw) -> list[tuple[str, int]]:
    cfg = TrainConfig(pairs=[TrainPair(image=image, reference=reference)], classes=list(CROPWEED_CLASSES),
                      checkpoint=image.parent / "m", index_channels=["ndvi"], **kw)
    train_src, _ = open_sources(cfg)
    [index] = resolve_index_channels(cfg.index_channels, train_src)
    return list(index.refs)


def test_band_numbers_need_the_sensor_and_get_sentinel2_roles_with_it(tmp_path):
    image, ref = tmp_path / "s2.tif", tmp_path / "ref.tif"
    _bands_file(image, ["B02", "B03", "B04", "B08"])
    _reference(ref)
    with pytest.raises(InputError, match="nir"):
        _ndvi_reads(image, ref)  # B08 is NIR for Sentinel-2, panchromatic for Landsat 8: not guessed
    assert _ndvi_reads(image, ref, sensor="sentinel2") == [("nir", 3), ("red", 2)]


def test_a_band_named_b8a_implies_sentinel2_as_for_inputs(tmp_path):
    image, ref = tmp_path / "s2.tif", tmp_path / "ref.tif"
    _bands_file(image, ["B02", "B03", "B04", "B08", "B8A"])
    _reference(ref)
    assert _ndvi_reads(image, ref) == [("nir", 3), ("red", 2)]
