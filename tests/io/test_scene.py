"""Reading inputs: validation of what users feed in, windowed reads and the nodata mask."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import BandError, InputError, MissingFileError, NoCRSError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, open_scene_xarray, read_window
from tests.fixtures import blocky_scene, write_raster


def test_scene_describes_file(tmp_path):
    path, _ = blocky_scene(tmp_path)
    scene = open_scene(str(path))
    assert (scene.grid.height, scene.grid.width, scene.count) == (300, 340, 4)
    assert scene.band_names == ("blue", "green", "red", "nir")
    assert scene.grid.crs.to_epsg() == 32633
    assert scene.block == (128, 128)
    assert scene.chunk_grid(200).chunk == 256  # aligned to the 128 px blocks


def test_nodata_and_nan_are_masked(tmp_path):
    data = np.ones((2, 40, 50), np.float32)
    data[0, 3, 4] = -9999
    data[1, 5, 6] = np.nan
    path = write_raster(tmp_path / "f.tif", data, nodata=-9999)
    scene = open_scene(str(path))
    values, valid = read_window(scene, Window(0, 0, 40, 50))
    assert values.dtype == np.float32
    assert not valid[3, 4] and not valid[5, 6]
    assert valid.sum() == 40 * 50 - 2


def test_multiple_files_stack_bands_with_prefixes(tmp_path):
    a = write_raster(tmp_path / "t0.tif", np.ones((2, 30, 30), np.uint16), descriptions=("red", "nir"))
    b = write_raster(tmp_path / "t1.tif", np.full((2, 30, 30), 2, np.uint16), descriptions=("red", "nir"))
    scene = open_scene([str(tmp_path / "t*.tif")])
    assert scene.paths == (str(a), str(b))
    assert scene.band_names == ("t0:red", "t0:nir", "t1:red", "t1:nir")
    values, _ = read_window(scene, Window(0, 0, 30, 30))
    assert values[:, 0, 0].tolist() == [1, 1, 2, 2]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing.tif", MissingFileError, "matches no file"),
        (lambda p: write_raster(p / "nocrs.tif", np.ones((1, 20, 20), np.uint8), crs=None), NoCRSError, "EPSG"),
        (lambda p: write_raster(p / "rot.tif", np.ones((1, 20, 20), np.uint8),
                                transform=Affine(10, 2, 500000, 1, -10, 5100000)), InputError, "rotated or skewed"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(tmp_path, make, error, message):
    path = make(tmp_path)
    with pytest.raises(error, match=message):
        open_scene(str(path))


def test_corrupt_file_is_an_input_error(tmp_path):
    path, _ = blocky_scene(tmp_path)
    raw = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[:200])
    with pytest.raises(InputError, match="cannot open"):
        open_scene(str(tmp_path / "cut.tif"))


def test_files_on_different_grids_are_stacked_on_the_first_files_grid(tmp_path):
    """Separate entries on other grids stack onto the job's grid (the first file's here), warped per window."""
    write_raster(tmp_path / "a.tif", np.ones((1, 20, 20), np.uint8))
    write_raster(tmp_path / "b.tif", np.full((1, 20, 20), 3, np.uint8), crs="EPSG:32632")
    scene = open_scene([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")])
    assert scene.grid.crs.to_epsg() == 32633 and scene.band_names == ("a:b1", "b:b1")
    values, valid = read_window(scene, Window(0, 0, 20, 20))
    assert (values[1][valid] == 3).all()


def test_gdal_virtual_paths_need_opt_in(tmp_path):
    with pytest.raises(InputError, match="allow_gdal_virtual"):
        open_scene("/vsicurl/http://example.invalid/x.tif")


def test_lazy_xarray_view_matches_windowed_read(tmp_path):
    path, _ = blocky_scene(tmp_path)
    da = open_scene_xarray(str(path), chunk=128)
    assert da.rio.crs.to_epsg() == 32633
    assert list(da.band.values) == ["blue", "green", "red", "nir"]
    assert da.chunks[1][0] == 128
    values, _ = read_window(open_scene(str(path)), Window(10, 20, 5, 6))
    np.testing.assert_array_equal(da[:, 10:15, 20:26].values.astype(np.float32), values)


def test_gcp_only_file_is_refused_with_the_gdalwarp_hint(tmp_path):
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcp.tif"
    gcps = [GroundControlPoint(0, 0, 500000, 5100000), GroundControlPoint(0, 20, 500200, 5100000),
            GroundControlPoint(20, 0, 500000, 5099800)]
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8") as ds:
        ds.write(np.ones((1, 20, 20), np.uint8))
        ds.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
    with pytest.raises(InputError, match="ground control points.*gdalwarp"):
        open_scene(str(path))


def test_tiles_of_one_mosaic_with_different_types_are_refused(tmp_path):
    from rasterio.transform import from_origin

    write_raster(tmp_path / "a.tif", np.ones((1, 20, 20), np.uint8))
    write_raster(tmp_path / "b.tif", np.ones((1, 20, 20), np.uint16), transform=from_origin(500200, 5100000, 10, 10))
    with pytest.raises(BandError):
        open_scene(str(tmp_path / "*.tif"))


def test_geographic_inputs_on_their_own_grid(tmp_path):
    """An EPSG:4326 file stays on its grid; windows read as from the file."""
    from rasterio.transform import from_origin

    data = np.arange(30 * 40, dtype=np.uint16).reshape(1, 30, 40)
    path = write_raster(tmp_path / "geo.tif", data, crs="EPSG:4326", transform=from_origin(14.5, 46.1, 0.001, 0.001))
    scene = open_scene(str(path))
    assert scene.grid.crs.is_geographic
    values, valid = read_window(scene, Window(5, 6, 10, 12))
    assert valid.all() and (values[0] == data[0, 5:15, 6:18]).all()
