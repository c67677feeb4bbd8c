"""Fill: an input's ``nodata:`` overrides the file's; undeclared constant fill around the edges is a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.fill import border_fill
from geoseg.io.scene import open_scene, read_window
from tests.fixtures import blocky_scene, write_raster

H, W = 200, 240


def _swath() -> np.ndarray:
    """A Landsat L1TP-like crop: a tilted swath of data inside zeros (no nodata tag)."""
    rng = np.random.default_rng(1)
    img = rng.integers(5000, 20000, (2, H, W)).astype("uint16")
    yy, xx = np.mgrid[0:H, 0:W]
    outside = np.abs((yy - H / 2) * 0.9 + (xx - W / 2) * 0.4) > 70
    img[:, outside] = 0
    return img


def test_undeclared_zero_fill_is_a_warning_naming_value_and_share(tmp_path, caplog):
    img = _swath()
    path = write_raster(tmp_path / "LC08_crop.tif", img)
    share = float((img[0] == 0).mean())
    with caplog.at_level(logging.WARNING, logger="geoseg.io.fill"):
        open_scene(str(path))
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "the value 0 fills" in msg and f"{100 * share:.1f} % of the file" in msg and "nodata: 0" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.io.fill"):
        scene = open_scene([{"path": str(path), "nodata": 0}])
    assert not caplog.records
    _, valid = read_window(scene, Window(0, 0, H, W))
    np.testing.assert_array_equal(valid, img[0] != 0)
    assert scene.bands[0].nodata == 0.0


def test_nodata_override_replaces_the_files_value_and_must_fit_its_type(tmp_path):
    img = _swath()
    img[:, :10, :10] = 7
    path = write_raster(tmp_path / "tagged.tif", img, nodata=7)
    _, valid = read_window(open_scene([{"path": str(path), "nodata": 0}]), Window(0, 0, H, W))
    np.testing.assert_array_equal(valid, img[0] != 0)  # 7 is data now, 0 is fill
    with pytest.raises(InputError, match="nodata -1.0 cannot occur"):
        open_scene([{"path": str(path), "nodata": -1}])


def test_declared_nodata_and_natural_scenes_are_not_warned_about(tmp_path, caplog):
    declared, _ = blocky_scene(tmp_path)  # a nodata corner declared as nodata
    with rasterio.open(declared) as ds:
        assert ds.nodata == 0
    with caplog.at_level(logging.WARNING, logger="geoseg.io.fill"):
        open_scene(str(declared))
        open_scene(str(write_raster(tmp_path / "swath.tif", _swath(), nodata=0)))
    assert not caplog.records
    scene = open_scene(str(write_raster(tmp_path / "again.tif", _swath())))
    value, border, file_share = border_fill(scene.layers[0].sources[0])
    assert value == 0 and border > 0.5 and 0.2 < file_share < 0.8


def test_a_file_whose_bands_declare_different_nodata_is_refused_until_the_input_chooses(tmp_path):
    """An ``.aux.xml`` side-car (as ArcGIS writes one) may give one band a nodata and the others none; geoseg
    read the first band's (none) for all, so the declared fill of band 2 was segmented as data."""
    img = np.full((3, 40, 50), 60, np.uint8)
    img[1, :10] = 0  # band 2's fill
    path = write_raster(tmp_path / "ortho.tif", img)
    (tmp_path / "ortho.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="2"><NoDataValue>0</NoDataValue></PAMRasterBand></PAMDataset>')
    with rasterio.open(path) as ds:
        assert ds.nodatavals == (None, 0.0, None)
    with pytest.raises(InputError, match=r"different nodata \(band 1: none, band 2: 0, band 3: none\).*set nodata: V"):
        open_scene([str(path)])
    _, valid = read_window(open_scene([{"path": str(path), "nodata": 0}]), Window(0, 0, 40, 50))
    np.testing.assert_array_equal(valid, img[1] != 0)
