"""netCDF/CF units GDAL does not apply (``scale_factor``/``add_offset`` in a band's metadata, as files converted
from HDF or netCDF carry them, HLS among them) are refused until the input says which formula holds."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from tests.fixtures import write_raster

H, W = 32, 40


def _hls_like(path, tags: dict[str, str], on_band: bool = True):
    stored = np.random.default_rng(8).integers(200, 4000, (H, W)).astype(np.int16)
    write_raster(path, stored, nodata=-9999)
    with rasterio.open(path, "r+") as ds:
        if on_band:
            ds.update_tags(1, **tags)
        else:
            ds.update_tags(**tags)
    return stored


@pytest.mark.parametrize("on_band", [True, False])
def test_cf_scale_tags_gdal_does_not_apply_are_refused_until_the_input_says(tmp_path, on_band):
    path = tmp_path / "HLS.S30.T33TWM.2024153T100031.v2.0.B04.tif"
    stored = _hls_like(path, {"scale_factor": "0.0001", "add_offset": "0"}, on_band)
    with rasterio.open(path) as ds:  # the oracle: GDAL's own reading states no scale or offset
        assert (ds.scales, ds.offsets) == ((1.0,), (0.0,))
    with pytest.raises(InputError, match=r"states scale_factor 0.0001 and add_offset 0 in its metadata, which GDAL does "
                                         r"not apply.*scale: 0.0001 and offset: 0 where value = stored × scale_factor"):
        open_scene([str(path)])
    told = open_scene([{"path": str(path), "scale": 0.0001}])
    data, valid = read_window(told, Window(0, 0, H, W))
    np.testing.assert_array_equal(data[0][valid], (stored.astype(np.float32) * np.float32(0.0001))[valid])
    raw = open_scene([{"path": str(path), "apply_scale": False}])
    assert read_window(raw, Window(0, 0, H, W))[0][0].tobytes() == stored.astype(np.float32).tobytes()


def test_cf_tags_of_identity_and_gdal_scale_over_them_are_read_without_a_word(tmp_path):
    _hls_like(tmp_path / "same.tif", {"scale_factor": "1", "add_offset": "0"})
    assert open_scene([str(tmp_path / "same.tif")]).bands[0].scale == 1.0
    _hls_like(tmp_path / "declared.tif", {"scale_factor": "0.0001"})
    with rasterio.open(tmp_path / "declared.tif", "r+") as ds:
        ds.scales = (0.0001,)  # GDAL's own statement of the units: the one applied
    assert open_scene([str(tmp_path / "declared.tif")]).bands[0].scale == pytest.approx(0.0001)


def test_a_training_image_with_unapplied_cf_units_is_refused(tmp_path):
    from geoseg.legend import ClassInfo
    from geoseg.methods.training import TrainPair
    from geoseg.methods.training.data import TrainSource, _resolve_class_lut

    _hls_like(tmp_path / "img.tif", {"scale_factor": "0.0001"})
    write_raster(tmp_path / "ref.tif", np.ones((H, W), np.uint8))
    lut = _resolve_class_lut([ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")])
    pair = TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif")
    with pytest.raises(InputError, match="training image .*img.tif states scale_factor 0.0001"):
        TrainSource(pair, None, lut, (0.0, 1.0))
    told = TrainSource(TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif", scale=0.0001),
                       None, lut, (0.0, 1.0))
    assert told.source.scales == (0.0001,)
