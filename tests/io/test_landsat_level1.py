"""Landsat Level-1 band files as USGS delivers them: digital numbers whose top-of-atmosphere reflectance and
fill are written only in the product's MTL. The oracle is USGS's formula, computed here in float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.threshold import resolve_index
from tests.fixtures import write_raster

H, W = 64, 80
L8 = "LC08_L1TP_190028_20230715_20230725_02_T1"
L7 = "LE07_L1TP_190028_20030715_20200904_01_T1"
SUN_ELEVATION = 38.5
MULT, ADD = 2.0e-05, -0.1


def _mtl(folder: Path, product: str, groups: dict[str, dict[str, str]]) -> None:
    """An MTL in its ODL text encoding (Collection 1's only one, Collection 2's ``.txt``)."""
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for name, values in groups.items():
        lines += [f"  GROUP = {name}", *(f"    {k} = {v}" for k, v in values.items()), f"  END_GROUP = {name}"]
    (folder / f"{product}_MTL.txt").write_text("\n".join([*lines, "END_GROUP = LANDSAT_METADATA_FILE", "END"]) + "\n")


def _landsat8_level1(folder: Path, sun_elevation: float | None = SUN_ELEVATION, mtl: bool = True) -> dict[str, np.ndarray]:
    """Landsat 8 Collection 2 L1TP band files (uint16, no nodata declared, fill 0 at the scene's edge)."""
    rng = np.random.default_rng(11)
    dn = {f"B{b}": rng.integers(6000, 24000, (H, W)).astype(np.uint16) for b in (2, 3, 4, 5, 10)}
    for d in dn.values():
        d[:, :5] = 0  # outside the scene, declared nowhere
    for name, d in dn.items():
        write_raster(folder / f"{L8}_{name}.TIF", d)
    if mtl:
        rescaling = {f"RADIANCE_{k}_BAND_{b}": v for b in range(1, 12) for k, v in (("MULT", "1.2E-02"), ("ADD", "-60.0"))}
        rescaling |= {f"REFLECTANCE_{k}_BAND_{b}": v for b in range(1, 10) for k, v in (("MULT", f"{MULT:E}"), ("ADD", f"{ADD}"))}
        attributes = {"SPACECRAFT_ID": '"LANDSAT_8"', "SENSOR_ID": '"OLI_TIRS"', "CLOUD_COVER": "3.5"}
        attributes |= {} if sun_elevation is None else {"SUN_ELEVATION": f"{sun_elevation}"}
        _mtl(folder, L8, {"IMAGE_ATTRIBUTES": attributes, "LEVEL1_RADIOMETRIC_RESCALING": rescaling})
    return dn


def _toa(dn: np.ndarray) -> np.ndarray:
    return (dn.astype(np.float64) * MULT + ADD) / math.sin(math.radians(SUN_ELEVATION))


def test_landsat8_level1_bands_read_as_top_of_atmosphere_reflectance_with_fill_zero(tmp_path):
    dn = _landsat8_level1(tmp_path)
    files = [str(tmp_path / f"{L8}_{name}.TIF") for name in dn]
    scene = open_scene([{"path": files, "kind": "bands"}])  # the MTL's SPACECRAFT_ID gives B4 its role
    assert [b.role for b in scene.bands] == ["blue", "green", "red", "nir08", "lwir11"]
    data, valid = read_window(scene, Window(0, 0, H, W))
    np.testing.assert_array_equal(valid, dn["B4"] != 0)  # 0 is the product's fill, not a dark pixel
    red, nir = _toa(dn["B4"]), _toa(dn["B5"])
    np.testing.assert_allclose(data[2][valid], red[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data[4][valid], (dn["B10"].astype(np.float64) * 1.2e-2 - 60.0)[valid], rtol=1e-5)
    ndvi = resolve_index("ndvi", scene.bands).compute(data)[0]
    np.testing.assert_allclose(ndvi[valid], ((nir - red) / (nir + red))[valid], rtol=1e-4, atol=1e-5)
    b4, b5 = dn["B4"][valid].astype(np.float64), dn["B5"][valid].astype(np.float64)
    assert np.abs(ndvi[valid] - (b5 - b4) / (b5 + b4)).max() > 0.05  # the digital numbers' NDVI is another figure
    raw = open_scene([{"path": files, "kind": "bands", "apply_scale": False}])
    assert read_window(raw, Window(0, 0, H, W))[0][2].tobytes() == dn["B4"].astype(np.float32).tobytes()


def test_landsat7_collection1_uint8_bands_and_thermal_vcid_take_their_units(tmp_path):
    dn = np.random.default_rng(2).integers(1, 255, (H, W)).astype(np.uint8)
    for band in ("B3", "B6_VCID_1"):
        write_raster(tmp_path / f"{L7}_{band}.TIF", dn)
    _mtl(tmp_path, L7, {  # Collection 1 names the group RADIOMETRIC_RESCALING
        "IMAGE_ATTRIBUTES": {"SUN_ELEVATION": "61.2"},
        "RADIOMETRIC_RESCALING": {"RADIANCE_MULT_BAND_6_VCID_1": "6.7087E-02", "RADIANCE_ADD_BAND_6_VCID_1": "-0.06709",
                                  "REFLECTANCE_MULT_BAND_3": "1.5E-03", "REFLECTANCE_ADD_BAND_3": "-0.004"}})
    red, thermal = (open_scene([str(tmp_path / f"{L7}_{b}.TIF")]).bands[0] for b in ("B3", "B6_VCID_1"))
    sine = math.sin(math.radians(61.2))
    assert (red.scale, red.offset) == pytest.approx((1.5e-03 / sine, -0.004 / sine))
    assert (thermal.scale, thermal.offset) == pytest.approx((6.7087e-02, -0.06709))


def test_level1_band_without_its_mtl_or_sun_elevation_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _landsat8_level1(tmp_path / "a", mtl=False)
    _landsat8_level1(tmp_path / "b", sun_elevation=None)
    with pytest.raises(InputError, match=f"Landsat Level-1 band.*but {L8}_MTL.txt .or .json, .xml. is not beside it"):
        open_scene([str(tmp_path / "a" / f"{L8}_B4.TIF")])
    with pytest.raises(InputError, match="gives no SUN_ELEVATION above the horizon"):
        open_scene([str(tmp_path / "b" / f"{L8}_B4.TIF")])
    told = open_scene([{"path": str(tmp_path / "a" / f"{L8}_B4.TIF"), "scale": 2e-5, "offset": -0.1}]).bands[0]
    assert (told.scale, told.offset) == (2e-5, -0.1)


def test_the_mtls_spacecraft_gives_band_numbers_their_roles_and_contradicts_a_wrong_sensor(tmp_path):
    _landsat8_level1(tmp_path)
    red = str(tmp_path / f"{L8}_B4.TIF")
    assert open_scene([red]).bands[0].role == "red"
    assert open_scene([red], sensor="landsat9").bands[0].role == "red"  # the same band table
    with pytest.raises(InputError, match="its product's metadata says landsat8 but the job says sensor: landsat5"):
        open_scene([red], sensor="landsat5")  # B4 would be NIR there
    renamed = tmp_path / "scene_B4.TIF"  # out of its product's name: no metadata, no table
    renamed.write_bytes(Path(red).read_bytes())
    assert open_scene([str(renamed)]).bands[0].role is None


def test_a_sentinel2_safe_band_takes_its_table_from_the_safe(tmp_path):
    img = tmp_path / "S2B_MSIL1C_20240601T100031_N0510_R122_T33TWM_20240601T120000.SAFE" / "GRANULE" / "g" / "IMG_DATA"
    img.mkdir(parents=True)
    (img.parents[2] / "MTD_MSIL1C.xml").write_text(
        "<n1:Level-1C_User_Product><General_Info><Product_Info><Datatake><SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>"
        "</Datatake></Product_Info><Product_Image_Characteristics><QUANTIFICATION_VALUE unit=\"none\">10000"
        "</QUANTIFICATION_VALUE></Product_Image_Characteristics></General_Info></n1:Level-1C_User_Product>")
    dn = np.full((H, W), 1500, np.uint16)
    files = [str(write_raster(img / f"T33TWM_20240601T100031_B{b}.jp2.tif", dn)) for b in ("04", "08")]
    for f in files:  # a JPEG 2000 name on a GeoTIFF: the opener reads by content
        Path(f).rename(f.removesuffix(".tif"))
    scene = open_scene([f.removesuffix(".tif") for f in files])
    assert [b.role for b in scene.bands] == ["red", "nir"]  # B8 is NIR on Sentinel-2, panchromatic on Landsat 8
    assert scene.bands[0].scale == pytest.approx(1e-4)
