"""Drone orthomosaics as OpenDroneMap, Pix4D, Agisoft Metashape and DJI Terra deliver them: which pixels are data,
which band is which and what the numbers mean, checked against GDAL's own reading (``gdalinfo -json``,
``gdal_translate``, ``gdalwarp``) and numpy. Every file is written in the delivered layout, not mocked."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from geoseg.cli import main
from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window

H, W = 160, 192
UTM = "EPSG:32633"
T = from_origin(500000, 5100000, 0.05, 0.05)

needs_gdal = pytest.mark.skipif(not (shutil.which("gdalinfo") and shutil.which("gdal_translate")
                                     and shutil.which("gdalwarp")), reason="GDAL command-line tools not installed")


def _inside() -> np.ndarray:
    """The flown area: an irregular footprint inside the rectangle, as an orthomosaic's."""
    yy, xx = np.mgrid[0:H, 0:W]
    return ((yy - H / 2) / (H * 0.42)) ** 2 + ((xx - W / 2) / (W * 0.45)) ** 2 < 1


def _rgb(dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 65535
    return rng.integers(1, top, (3, H, W), endpoint=False).astype(dtype)


def _write(path: Path, data: np.ndarray, *, crs: str = UTM, transform=T, mask: np.ndarray | None = None,
           descriptions=None, **profile) -> Path:
    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                dtype=data.dtype.name, crs=crs, transform=transform, tiled=True, blockxsize=64, blockysize=64)
    prof.update(profile)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if mask is not None:
            ds.write_mask(mask)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return path


def _gdalinfo(path: Path) -> dict:
    return json.loads(subprocess.run(["gdalinfo", "-json", str(path)], check=True, capture_output=True,
                                     text=True).stdout)


def _translate(*args: str) -> None:
    subprocess.run(["gdal_translate", "-q", *args], check=True, capture_output=True)


def _whole(scene):
    return read_window(scene, Window(0, 0, scene.height, scene.width))


# ------------------------------------------------------------------------------------------
# OpenDroneMap
# ------------------------------------------------------------------------------------------

@needs_gdal
def test_odm_rgba_orthophoto_alpha_is_validity_as_gdal_says(tmp_path):
    """odm_orthophoto.tif (ODM >= 3): RGBA uint8, the 4th band flagged alpha; outside the flight, colour is garbage."""
    inside = _inside()
    rgb = _rgb()
    rgb[:, ~inside] = 77
    plain = _write(tmp_path / "plain.tif", np.concatenate([rgb, np.where(inside, 255, 0).astype("uint8")[None]]),
                   photometric="RGB")
    ortho = tmp_path / "odm_orthophoto.tif"
    _translate("-colorinterp", "red,green,blue,alpha", "-co", "TILED=YES", str(plain), str(ortho))
    info = _gdalinfo(ortho)
    assert [b["colorInterpretation"] for b in info["bands"]] == ["Red", "Green", "Blue", "Alpha"]
    scene = open_scene(str(ortho))
    assert scene.count == 3 and [b.role for b in scene.bands] == ["red", "green", "blue"]
    data, valid = _whole(scene)
    np.testing.assert_array_equal(valid, inside)
    np.testing.assert_array_equal(data[:, valid], rgb[:, inside].astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
@pytest.mark.parametrize("flagged", [True, False], ids=["alpha-flag", "described-alpha-only"])
@needs_gdal
def test_odm_multispectral_alpha_band_is_never_a_feature(tmp_path, dtype, flagged):
    """ODM multispectral: Blue..Rededge with descriptions and a last alpha band; some writers set the TIFF alpha
    flag, others only describe the band ``alpha`` (GDAL then calls it Undefined): both are transparency."""
    inside = _inside()
    rng = np.random.default_rng(3)
    values = (rng.random((5, H, W)) * (1 if dtype == "float32" else 40000)).astype(dtype)
    top = 255 if dtype == "float32" else 65535
    alpha = np.where(inside, top, 0).astype(dtype)[None]
    names = ["Blue", "Green", "Red", "NIR", "Rededge", "alpha"]
    path = _write(tmp_path / "raw.tif", np.concatenate([values, alpha]), descriptions=names)
    if flagged:
        _translate("-colorinterp_6", "alpha", str(path), str(tmp_path / "odm_orthophoto.tif"))
        path = tmp_path / "odm_orthophoto.tif"
    band6 = _gdalinfo(path)["bands"][5]
    assert band6["colorInterpretation"] == ("Alpha" if flagged else "Undefined")
    assert band6.get("description") == "alpha"
    scene = open_scene(str(path))
    assert scene.band_names == ("Blue", "Green", "Red", "NIR", "Rededge")
    assert [b.role for b in scene.bands] == ["blue", "green", "red", "nir", "rededge"]
    data, valid = _whole(scene)
    np.testing.assert_array_equal(valid, inside)
    np.testing.assert_array_equal(data[:, valid], values[:, inside].astype(np.float32))


@needs_gdal
def test_an_rgb_file_with_an_unflagged_fourth_band_is_refused_then_read_as_the_job_says(tmp_path):
    """RGB + a 4th band written without the alpha flag (GDAL: Undefined): transparency or NIR cannot be told from
    the file. Refused in one line; its gdal_translate makes it alpha; bands: keeps it as values."""
    inside = _inside()
    fourth = np.where(inside, 255, 0).astype("uint8")
    path = _write(tmp_path / "ortho.tif", np.concatenate([_rgb(), fourth[None]]), photometric="RGB")
    assert _gdalinfo(path)["bands"][3]["colorInterpretation"] == "Undefined"  # GDAL: a value band
    with pytest.raises(InputError) as err:
        open_scene(str(path))
    msg = str(err.value)
    assert "\n" not in msg and "band 4" in msg and "bands:" in msg
    command = msg.split("(gdal_translate ")[1].split(")")[0].split()
    assert command == ["-colorinterp_4", "alpha", "ortho.tif", "marked.tif"]
    _translate(*command[:2], str(path), str(tmp_path / command[3]))  # the line's own command, as a user runs it
    _, valid = _whole(open_scene(str(tmp_path / "marked.tif")))
    np.testing.assert_array_equal(valid, inside)
    as_values = open_scene([{"path": str(path), "bands": ["red", "green", "blue", "nir"]}])
    assert as_values.count == 4 and [b.role for b in as_values.bands] == ["red", "green", "blue", "nir"]
    assert _whole(as_values)[1].all()  # the job's word: band 4 is data, its 0 too


def test_files_whose_bands_are_all_unnamed_or_all_named_are_not_refused(tmp_path):
    """Metashape multispectral without descriptions (Gray, Undefined...): no band is named, nothing to tell apart."""
    rng = np.random.default_rng(4)
    plain = _write(tmp_path / "ms.tif", rng.integers(1, 60000, (5, H, W)).astype("uint16"))
    with rasterio.open(plain) as ds:
        assert [c.name for c in ds.colorinterp] == ["gray"] + ["undefined"] * 4 and not any(ds.descriptions)
    scene = open_scene(str(plain))
    assert scene.count == 5 and all(b.role is None for b in scene.bands)


def test_odm_rgb_with_nodata_declared(tmp_path):
    """Older ODM: RGB with nodata 0. A pixel is nodata where any band holds it (a dark pixel with one 0 channel
    too): written down in README; checked here against numpy."""
    inside = _inside()
    rgb = _rgb()
    rgb[:, ~inside] = 0
    rgb[0, 10:14, 90:94] = 0  # a dark pixel inside: red 0, green and blue not
    path = _write(tmp_path / "odm_orthophoto.tif", rgb, photometric="RGB", nodata=0)
    _, valid = _whole(open_scene(str(path)))
    np.testing.assert_array_equal(valid, ~np.any(rgb == 0, axis=0))


# ------------------------------------------------------------------------------------------
# Pix4D
# ------------------------------------------------------------------------------------------

def test_pix4d_reflectance_maps_and_dsm(tmp_path):
    """``*_transparent_reflectance_<band>.tif``: float32, nodata -10000, the band in the file name; the DSM is
    elevation: one band with no role, its fill declared, so an index asking for red cannot take it."""
    inside = _inside()
    rng = np.random.default_rng(5)
    refl = {}
    for band in ("green", "red", "red edge", "nir"):
        r = np.where(inside, rng.random((H, W)), -10000).astype("float32")
        refl[band] = r
        _write(tmp_path / f"field_transparent_reflectance_{band}.tif", r[None], nodata=-10000)
    scene = open_scene([str(tmp_path / f"field_transparent_reflectance_{b}.tif") for b in refl])
    assert [b.role for b in scene.bands] == ["green", "red", "rededge", "nir"]
    assert all(b.nodata == -10000 for b in scene.bands)
    data, valid = _whole(scene)
    np.testing.assert_array_equal(valid, inside)
    np.testing.assert_array_equal(data[1, valid], refl["red"][inside])
    dsm = np.where(inside, 312.5 + rng.random((H, W)), -10000).astype("float32")
    _write(tmp_path / "field_dsm.tif", dsm[None], nodata=-10000)
    dsm_scene = open_scene(str(tmp_path / "field_dsm.tif"))
    assert dsm_scene.bands[0].role is None and dsm_scene.bands[0].nodata == -10000
    np.testing.assert_array_equal(_whole(dsm_scene)[1], inside)


# ------------------------------------------------------------------------------------------
# Agisoft Metashape
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@needs_gdal
def test_metashape_orthomosaic_with_internal_mask(tmp_path, dtype):
    """Metashape: RGB (8-bit JPEG-compressed YCbCr, or 16-bit) with an internal GDAL mask and no nodata. GDAL decodes
    the YCbCr JPEG as RGB; geoseg must give GDAL's pixels and GDAL's mask (read back with gdal_translate -b mask)."""
    inside = _inside()
    if dtype == "uint8":  # smooth colours: JPEG decoders of different GDAL builds then differ by a few levels only
        yy, xx = np.mgrid[0:H, 0:W]
        rgb = np.stack([xx * 255 / W, yy * 255 / H, (xx + yy) * 255 / (H + W)]).astype("uint8")
        profile = dict(compress="JPEG", photometric="YCBCR")
    else:
        rgb, profile = _rgb(dtype), dict(photometric="RGB")
    path = _write(tmp_path / "orthomosaic.tif", rgb, mask=np.where(inside, 255, 0).astype("uint8"), **profile)
    info = _gdalinfo(path)
    if dtype == "uint8":
        assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "YCbCr JPEG"
    assert [b["colorInterpretation"] for b in info["bands"]] == ["Red", "Green", "Blue"]
    assert all(b["mask"]["flags"] == ["PER_DATASET"] for b in info["bands"])
    _translate("-b", "1", "-b", "2", "-b", "3", "-b", "mask", str(path), str(tmp_path / "oracle.tif"))
    with rasterio.open(tmp_path / "oracle.tif") as ds:
        oracle = ds.read()
    scene = open_scene(str(path))
    assert [b.role for b in scene.bands] == ["red", "green", "blue"]
    data, valid = _whole(scene)
    np.testing.assert_array_equal(valid, oracle[3] != 0)
    tolerance = 4 if dtype == "uint8" else 0  # lossy: the command-line GDAL's libjpeg may round differently
    np.testing.assert_allclose(data[:, valid], oracle[:3, valid].astype(np.float32), atol=tolerance, rtol=0)
    np.testing.assert_allclose(data[:, valid], rgb[:, valid].astype(np.float32), atol=2 * tolerance, rtol=0)


# ------------------------------------------------------------------------------------------
# DJI Terra
# ------------------------------------------------------------------------------------------

def test_dji_terra_band_files_take_their_roles_from_their_names(tmp_path):
    inside = _inside()
    rng = np.random.default_rng(6)
    for band in ("Blue", "Green", "Red", "RedEdge", "NIR"):
        _write(tmp_path / f"result_{band}.tif", np.where(inside, rng.random((H, W)), -10000).astype("float32")[None],
               nodata=-10000)
    scene = open_scene(str(tmp_path / "result_*.tif"))
    assert {b.layer: b.role for b in scene.bands} == {
        "result_Blue": "blue", "result_Green": "green", "result_Red": "red", "result_RedEdge": "rededge",
        "result_NIR": "nir"}
    np.testing.assert_array_equal(_whole(scene)[1], inside)


# ------------------------------------------------------------------------------------------
# tiles of one mosaic, backgrounds declared nowhere
# ------------------------------------------------------------------------------------------

def test_8_and_16_bit_tiles_of_one_mosaic_are_refused(tmp_path):
    _write(tmp_path / "tile_a.tif", _rgb("uint8"), photometric="RGB")
    _write(tmp_path / "tile_b.tif", _rgb("uint16"), photometric="RGB", transform=T * T.translation(W, 0))
    with pytest.raises(InputError, match="uint16 but .* is uint8; tiles of one mosaic must have one data type"):
        open_scene([{"path": str(tmp_path / "tile_*.tif"), "kind": "mosaic"}])


@pytest.mark.parametrize("background", [255, 0])
@needs_gdal
def test_undeclared_rgb_background_warning_counts_pixels_fill_in_every_band(tmp_path, caplog, background):
    """White or black background, declared nowhere: the warning names the value in all bands, the share of the
    file that is background, and how many real pixels nodata: would drop too (saturated or dark in one channel);
    its gdalwarp recipe keeps them (GDAL: nodata only where every band holds it)."""
    inside = _inside()
    rgb = _rgb()
    rgb[:, ~inside] = background
    rgb[1, 40:50, 60:100] = background  # 400 real pixels with one channel at the background's value
    path = _write(tmp_path / "orthomosaic.tif", rgb, photometric="RGB")
    fill = np.all(rgb == background, axis=0)
    partial = np.any(rgb == background, axis=0) & ~fill
    with caplog.at_level(logging.WARNING, logger="geoseg.io.fill"):
        open_scene(str(path))
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in msg
    assert f"the value {background} fills 100 % of its border in all 3 bands" in msg
    assert f"{100 * fill.mean():.1f} % of the file" in msg and f"nodata: {background}`" in msg
    assert f"the {100 * partial.mean():.2f} % of pixels where only some bands are {background}" in msg
    recipe = msg.split("(gdalwarp ")[1].split(")")[0].split()
    assert recipe == ["-srcnodata", str(background), "-dstalpha", "in.tif", "out.tif"]
    out = tmp_path / "out.tif"
    subprocess.run(["gdalwarp", "-q", *recipe[:3], str(path), str(out)], check=True, capture_output=True)
    warped = open_scene(str(out))
    assert warped.grid.same_as(open_scene(str(path)).grid)
    data, valid = _whole(warped)
    np.testing.assert_array_equal(valid, ~fill)  # the partial pixels are kept
    np.testing.assert_array_equal(data[:, valid], rgb[:, ~fill].astype(np.float32))
    _, with_nodata = _whole(open_scene([{"path": str(path), "nodata": background}]))
    np.testing.assert_array_equal(with_nodata, ~(fill | partial))  # what the warning says nodata: does


def test_one_band_at_a_value_on_the_border_is_not_taken_for_fill(tmp_path, caplog):
    """Red at 255 all round the border but green and blue vary: not a background, no warning (the check once
    read the first band only and told the user to drop every pixel of red 255)."""
    rgb = _rgb()
    rgb[0, :4, :], rgb[0, -4:, :], rgb[0, :, :4], rgb[0, :, -4:] = 255, 255, 255, 255
    path = _write(tmp_path / "ortho.tif", rgb, photometric="RGB")
    with caplog.at_level(logging.WARNING, logger="geoseg.io.fill"):
        open_scene(str(path))
    assert not caplog.records


# ------------------------------------------------------------------------------------------
# US survey feet
# ------------------------------------------------------------------------------------------

@needs_gdal
def test_state_plane_feet_pixel_area_is_in_square_metres(tmp_path):
    """NY Long Island State Plane (EPSG:2263, US survey feet), 0.25 ft pixels: areas in m² use the US survey foot
    (1200/3937 m), not the international foot, and the chunking, in pixels, is the same as for a metre grid."""
    path = _write(tmp_path / "ortho_ft.tif", _rgb(), crs="EPSG:2263", transform=from_origin(980000, 200000, 0.25, 0.25),
                  photometric="RGB")
    wkt = _gdalinfo(path)["coordinateSystem"]["wkt"]
    assert 'LENGTHUNIT["US survey foot",0.304800609601219' in wkt
    scene = open_scene(str(path))
    assert scene.resolution == 0.25
    assert math.isclose(scene.grid.pixel_area_m2, (0.25 * 1200 / 3937) ** 2, rel_tol=1e-12)
    metres = open_scene(str(_write(tmp_path / "ortho_m.tif", _rgb(), photometric="RGB")))
    assert list(scene.chunk_grid(128).windows()) == list(metres.chunk_grid(128).windows())


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------

def test_cli_refuses_an_unflagged_fourth_band_in_one_line(tmp_path, capsys):
    path = _write(tmp_path / "ortho.tif", np.concatenate([_rgb(), np.full((1, H, W), 255, "uint8")]),
                  photometric="RGB")
    job = {"name": "odm", "inputs": [str(path)], "output": str(tmp_path / "out"), "chunk_size": 128,
           "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 1000}, "vectorize": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    rc = main(["run", str(tmp_path / "job.yaml")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("geoseg: error: ") and "-colorinterp_4 alpha" in err


@pytest.mark.parametrize("names", [("field_transparent_reflectance_red.tif", "field_transparent_reflectance_nir.tif"),
                                   ("result_Red.tif", "result_NIR.tif")], ids=["pix4d", "dji-terra"])
def test_band_files_on_shifted_extents_are_not_a_mosaic(tmp_path, names):
    """Per-band reflectance maps of one flight whose extents differ by a few pixels (each band's camera sees a
    slightly shifted footprint) are on different grids; given as one glob, kind: auto once composited red and
    NIR into one band. Refused in one line; its kind: bands stacks them, each pixel from its own file."""
    rng = np.random.default_rng(7)
    red, nir = (rng.random((H, W)).astype("float32") for _ in range(2))
    shift = 3  # px east
    _write(tmp_path / names[0], red[None], nodata=-10000)
    _write(tmp_path / names[1], nir[None], nodata=-10000, transform=T * T.translation(shift, 0))
    glob_ = str(tmp_path / "*.tif")
    with pytest.raises(InputError) as err:
        open_scene(glob_)
    msg = str(err.value)
    assert "\n" not in msg and "not tiles of one mosaic" in msg and "kind: bands" in msg
    assert "if they are tiles all the same, kind: mosaic" in msg
    assert open_scene([{"path": glob_, "kind": "mosaic"}]).count == 1  # the job's word: tiles, composited
    scene = open_scene([{"path": glob_, "kind": "bands"}])
    roles = [b.role for b in scene.bands]
    assert sorted(roles) == ["nir", "red"] and scene.width == W + shift
    data, valid = _whole(scene)
    both = np.zeros((H, W + shift), bool)
    both[:, shift:W] = True
    np.testing.assert_array_equal(valid, both)
    np.testing.assert_array_equal(data[roles.index("red")][:, shift:W], red[:, shift:])
    np.testing.assert_array_equal(data[roles.index("nir")][:, shift:W], nir[:, :W - shift])


def test_tiles_of_one_band_stay_a_mosaic(tmp_path):
    """Two tiles of the same band (the same name token) on different extents are still tiles of one layer."""
    a = np.full((1, H, W), 0.25, "float32")
    _write(tmp_path / "north_transparent_reflectance_red.tif", a, nodata=-10000)
    _write(tmp_path / "south_transparent_reflectance_red.tif", a * 2, nodata=-10000,
           transform=T * T.translation(0, H))
    scene = open_scene(str(tmp_path / "*.tif"))
    assert scene.count == 1 and scene.bands[0].role == "red" and scene.height == 2 * H
    data, valid = _whole(scene)
    assert valid.all() and (data[0, :H] == 0.25).all() and (data[0, H:] == 0.5).all()
