"""Band descriptions that give a role's name with its centre wavelength, as multispectral drone cameras name
their bands (MicaSense ``Red edge-705``, an orthomosaic's ``Red (668nm)``): the role where the two agree."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import BandRoleError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.threshold import resolve_index
from tests.fixtures import write_raster

H, W = 24, 30


def _ortho(path, names: list[str]) -> np.ndarray:
    data = np.random.default_rng(6).uniform(0.02, 0.6, (len(names), H, W)).astype(np.float32)
    write_raster(path, data, descriptions=names)
    return data


def test_a_micasense_orthomosaic_names_its_roles_with_their_wavelengths(tmp_path):
    names = ["Blue (475nm)", "Green (560nm)", "Red (668nm)", "Red edge (717nm)", "NIR (842nm)"]
    data = _ortho(tmp_path / "ortho.tif", names)
    scene = open_scene([str(tmp_path / "ortho.tif")])
    assert [b.role for b in scene.bands] == ["blue", "green", "red", "rededge", "nir"]
    pixels, _ = read_window(scene, Window(0, 0, H, W))
    ndvi = resolve_index("ndvi", scene.bands).compute(pixels)[0]
    np.testing.assert_allclose(ndvi, (data[4] - data[2]) / (data[4] + data[2]), rtol=1e-5, atol=1e-6)


def test_a_dual_camera_band_list_gives_each_name_its_role(tmp_path):
    names = ["Blue", "Green", "Red", "NIR", "Red edge", "Blue-444", "Green-531", "Red-650", "Red edge-705",
             "Red edge-740"]
    _ortho(tmp_path / "dual.tif", names)
    roles = [b.role for b in open_scene([str(tmp_path / "dual.tif")]).bands]
    assert roles == ["blue", "green", "red", "nir", "rededge", "blue", "green", "red", "rededge", "rededge"]


def test_a_name_whose_wavelength_contradicts_it_gives_no_role(tmp_path):
    _ortho(tmp_path / "odd.tif", ["Green 560", "Red 842", "NIR 668"])
    scene = open_scene([str(tmp_path / "odd.tif")])
    assert [b.role for b in scene.bands] == ["green", None, None]
    with pytest.raises(BandRoleError):
        resolve_index("ndvi", scene.bands)
