"""STAC items in the shapes public catalogs write them (Planetary Computer, Earth Search v1, USGS LandsatLook),
with tiny local GeoTIFF assets beside them: which band, which units and which fill geoseg reads, against numpy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.io.stac import stac_assets
from tests.fixtures import write_raster

LS_ID = "LC08_L2SP_190028_20230715_20230725_02_T1"
#: Planetary Computer's landsat-c2-l2 raster:bands of a surface reflectance asset.
PC_LS_RASTER = [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 30, "unit": "", "scale": 2.75e-05,
                 "offset": -0.2}]
#: Earth Search v1's sentinel-2-l2a raster:bands of a 10 m band.
ES_RASTER = [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": 10, "scale": 0.0001,
              "offset": -0.1}]


def _tif(folder: Path, name: str, seed: int, *, nodata=0, crs="EPSG:32633", x=500000.0, y=5100000.0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1000, 30000, size=(1, 16, 16)).astype(np.uint16)
    data[0, :2, :3] = 0  # fill in a corner
    write_raster(folder / name, data, crs=crs, nodata=nodata, transform=from_origin(x, y, 10, 10))
    return data[0]


def _item(folder: Path, name: str, item_id: str, props: dict, assets: dict, epsg: int = 32633) -> Path:
    doc = {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "c",
           "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                               "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                               "https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
           "geometry": {"type": "Polygon", "coordinates": [[[15, 45], [15.1, 45], [15.1, 45.1], [15, 45.1], [15, 45]]]},
           "bbox": [15, 45, 15.1, 45.1], "links": [], "assets": assets,
           "properties": {"datetime": "2023-07-15T10:00:00Z", "proj:epsg": epsg, **props}}
    (folder / name).write_text(json.dumps(doc))
    return folder / name


def _read(entry: dict, **kw) -> tuple[np.ndarray, np.ndarray, tuple]:
    scene = open_scene([entry], **kw)
    values, valid = read_window(scene, Window(0, 0, scene.grid.height, scene.grid.width))
    return values, valid, scene.bands


def _eo(name: str, common: str, um: float) -> list[dict]:
    return [{"name": name, "common_name": common, "center_wavelength": um}]


def test_planetary_computer_landsat_c2_l2_is_read_as_reflectance_with_its_fill(tmp_path):
    red = _tif(tmp_path, f"{LS_ID}_SR_B4.TIF", 1, nodata=None)  # PC's COGs: fill 0 from raster:bands
    item = _item(tmp_path, "pc_ls.json", "LC08_L2SP_190028_20230715_02_T1",
                 {"platform": "landsat-8", "instruments": ["oli", "tirs"], "landsat:correction": "L2SP"},
                 {"red": {"href": f"{LS_ID}_SR_B4.TIF", "roles": ["data"], "eo:bands": _eo("SR_B4", "red", 0.65),
                          "raster:bands": PC_LS_RASTER},
                  "qa_pixel": {"href": f"{LS_ID}_SR_B4.TIF", "roles": ["cloud"],
                               "raster:bands": [{"unit": "bit index", "nodata": 1, "data_type": "uint16"}],
                               "classification:bitfields": [{"name": "cloud", "offset": 3, "length": 1}]}})
    values, valid, bands = _read({"stac": str(item), "assets": ["red"]})
    assert bands[0].role == "red" and bands[0].nodata == 0.0
    np.testing.assert_allclose(values[0][valid], (red * np.float32(2.75e-05) - np.float32(0.2))[red != 0], rtol=1e-6)
    assert (valid == (red != 0)).all()


def test_usgs_landsatlook_item_without_raster_bands_is_read_in_collection_2_units(tmp_path):
    red = _tif(tmp_path, f"{LS_ID}_SR_B4.TIF", 2)
    st = _tif(tmp_path, f"{LS_ID}_ST_B10.TIF", 3)
    s3 = "s3://usgs-landsat/collection02/level-2/standard/oli-tirs/2023/190/028"
    item = _item(tmp_path, "usgs.json", f"{LS_ID}_SR",
                 {"platform": "LANDSAT_8", "instruments": ["OLI", "TIRS"], "landsat:correction": "L2SP"},
                 {"red": {"href": f"{LS_ID}_SR_B4.TIF", "roles": ["data"], "eo:bands": _eo("B4", "red", 0.65),
                          "alternate": {"s3": {"storage:requester_pays": True, "href": f"{s3}/{LS_ID}_SR_B4.TIF"}}},
                  "lwir11": {"href": f"{LS_ID}_ST_B10.TIF", "roles": ["temperature"]}})
    values, valid, bands = _read({"stac": str(item), "assets": ["red", "lwir11"]})
    assert [(b.scale, b.offset) for b in bands] == [(2.75e-05, -0.2), (0.00341802, 149.0)]
    np.testing.assert_allclose(values[0][valid], (red * np.float32(2.75e-05) - np.float32(0.2))[valid], rtol=1e-6)
    np.testing.assert_allclose(values[1][valid], (st * np.float32(0.00341802) + np.float32(149))[valid], rtol=1e-6)
    stored, _, _ = _read({"stac": str(item), "assets": ["red"], "apply_scale": False})  # the job's word still wins
    np.testing.assert_array_equal(stored[0][valid], red[valid])
    given, _, _ = _read({"stac": str(item), "assets": ["red"], "scale": 0.5})
    np.testing.assert_allclose(given[0][valid], red[valid] * 0.5)


def test_signed_href_query_does_not_hide_a_landsat_band_name(tmp_path):
    item = _item(tmp_path, "signed.json", LS_ID, {"platform": "landsat-8"},
                 {"red": {"href": f"https://example.invalid/c2/{LS_ID}_SR_B4.TIF?st=2023-07-15T10%3A00Z&se=2023-07-16"
                                  "&sp=rl&sig=a%2Fb%3D", "eo:bands": _eo("SR_B4", "red", 0.65)},
                  "other": {"href": "https://example.invalid/c2/b.tif?name=LC08_L2SP_190028_20230715_20230725_02_T1"
                                    "_SR_B4.TIF", "eo:bands": _eo("B5", "nir08", 0.86)}})
    (red,), (nir,) = (a.files for a in stac_assets(str(item), ["red", "nir08"], allow_outside=True))  # no file read
    assert (red.scales, red.offsets) == ((2.75e-05,), (-0.2,))
    assert (nir.scales, nir.offsets) == ((None,), (None,))  # a band name in the query is not the file's name


def test_sentinel2_baseline_4_without_scale_is_refused_and_earth_search_scale_is_applied(tmp_path):
    b04 = _tif(tmp_path, "T33TWM_20230715T100031_B04_10m.tif", 4)
    eo = _eo("B04", "red", 0.665)
    pc = _item(tmp_path, "pc_s2.json", "S2A_MSIL2A_20230715T100031_R122_T33TWM_20230715T161000",
               {"platform": "Sentinel-2A", "constellation": "Sentinel 2", "s2:processing_baseline": "05.09"},
               {"B04": {"href": b04_name(), "roles": ["data"], "gsd": 10.0, "eo:bands": eo}})
    with pytest.raises(InputError, match=r"baseline 05\.09.*scale: 0\.0001 and offset: -0\.1") as err:
        open_scene([{"stac": str(pc), "assets": ["red"]}])
    assert "\n" not in str(err.value)
    values, valid, _ = _read({"stac": str(pc), "assets": ["red"], "scale": 0.0001, "offset": -0.1})
    oracle = b04 * np.float32(0.0001) - np.float32(0.1)
    np.testing.assert_allclose(values[0][valid], oracle[b04 != 0], rtol=1e-5)
    es = _item(tmp_path, "es.json", "S2A_33TWM_20230715_0_L2A",
               {"platform": "sentinel-2a", "constellation": "sentinel-2", "s2:processing_baseline": "05.09",
                "earthsearch:boa_offset_applied": True},
               {"red": {"href": b04_name(), "roles": ["data"], "eo:bands": _eo("red", "red", 0.665),
                        "raster:bands": ES_RASTER}})
    values, valid, bands = _read({"stac": str(es), "assets": ["red"]})
    assert (bands[0].scale, bands[0].offset) == (0.0001, -0.1)
    np.testing.assert_allclose(values[0][valid], oracle[b04 != 0], rtol=1e-5)


def b04_name() -> str:
    return "T33TWM_20230715T100031_B04_10m.tif"


@pytest.fixture
def sentinel2_item(tmp_path):
    """Earth Search v1's shape: ``red`` and ``red-jp2`` hold one band, three rededge assets share a common name."""
    assets = {}
    for seed, (key, name, common) in enumerate([("red", "red", "red"), ("nir", "nir", "nir"),
                                                 ("red-jp2", "red", "red"), ("rededge1", "rededge1", "rededge"),
                                                 ("rededge2", "rededge2", "rededge"), ("nir08", "nir08", "nir08")]):
        _tif(tmp_path, f"{key}.tif", seed)
        assets[key] = {"href": f"{key}.tif", "roles": ["data"], "eo:bands": _eo(name, common, 0.7),
                       "raster:bands": ES_RASTER}
    assets["scl"] = {"href": "red.tif", "roles": ["data"], "raster:bands": [{"nodata": 0, "data_type": "uint8"}]}
    return _item(tmp_path, "es.json", "S2B_33TWM_20230715_0_L2A",
                 {"platform": "sentinel-2b", "s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True},
                 assets)


def test_a_common_name_several_assets_share_is_refused_and_a_key_picks_one(sentinel2_item):
    with pytest.raises(InputError, match=r"rededge1, rededge2 all have the eo:bands common name 'rededge'; name"):
        stac_assets(str(sentinel2_item), ["rededge"])
    (asset,) = stac_assets(str(sentinel2_item), ["rededge2"])
    assert asset.files[0].href.endswith("rededge2.tif")


def test_every_asset_by_default_is_refused_where_two_hold_one_band(sentinel2_item):
    with pytest.raises(InputError, match=r"assets red and red-jp2 both hold band 'red'"):
        stac_assets(str(sentinel2_item), [])
    assert [a.key for a in stac_assets(str(sentinel2_item), ["red", "nir"])] == ["red", "nir"]


def test_a_key_whose_asset_has_another_common_name_is_refused_where_another_asset_has_it(tmp_path):
    _tif(tmp_path, "b8a.tif", 1)
    _tif(tmp_path, "b08.tif", 2)
    item = _item(tmp_path, "kd.json", "kd", {"platform": "sentinel-2a"},
                 {"nir": {"href": "b8a.tif", "eo:bands": _eo("B8A", "nir08", 0.865), "raster:bands": ES_RASTER},
                  "B08": {"href": "b08.tif", "eo:bands": _eo("B08", "nir", 0.842), "raster:bands": ES_RASTER}})
    with pytest.raises(InputError, match=r"'nir' is the key of an asset whose eo:bands common name is 'nir08'"):
        stac_assets(str(item), ["nir"])
    assert stac_assets(str(item), ["nir08"])[0].key == "nir"
    assert stac_assets(str(item), ["B08"])[0].band == "nir"


def test_items_in_two_utm_zones_are_composed_on_the_first_items_crs(tmp_path, caplog):
    x34, y34 = warp_points("EPSG:32633", "EPSG:32634", [500000.0], [5100000.0])
    a = _tif(tmp_path, "z34.tif", 5, crs="EPSG:32634", x=round(x34[0]), y=round(y34[0]))
    _tif(tmp_path, "z33.tif", 6)
    docs = []
    for href, epsg in (("z34.tif", 32634), ("z33.tif", 32633)):
        path = _item(tmp_path, f"{epsg}.json", f"i{epsg}", {"platform": "sentinel-2a"},
                     {"red": {"href": href, "eo:bands": _eo("B04", "red", 0.665), "raster:bands": ES_RASTER}}, epsg)
        docs.append(json.loads(path.read_text()))
    (tmp_path / "both.json").write_text(json.dumps({"type": "FeatureCollection", "features": docs}))
    with caplog.at_level(logging.WARNING, logger="geoseg.io.gridspec"):
        scene = open_scene([{"stac": str(tmp_path / "both.json"), "assets": ["red"]}])
    assert scene.grid.crs.to_epsg() == 32634  # the first item's zone; the other item is warped onto it
    said = [r.getMessage() for r in caplog.records if r.name == "geoseg.io.gridspec"]
    assert said == ["1 input file(s) in EPSG:32633 (e.g. z33.tif) are warped onto the grid's EPSG:32634, the first "
                    "input's CRS; set grid: {crs: ...} to choose another"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.io.gridspec"):  # the job's choice: nothing to say
        open_scene([{"stac": str(tmp_path / "both.json"), "assets": ["red"]}], grid={"crs": "EPSG:32633"})
    assert not [r for r in caplog.records if r.name == "geoseg.io.gridspec"]
    with rasterio.open(tmp_path / "z34.tif") as ds:
        left, top = ds.transform.c, ds.transform.f
    grid = scene.grid.transform
    col, row = (left - grid.c) / 10, (grid.f - top) / 10
    assert col == int(col) and row == int(row)  # on the first item's pixel corners
    window = Window(int(row), int(col), a.shape[0], a.shape[1])
    values, valid = read_window(scene, window)
    assert valid[a != 0].all()  # the first item's valid pixels, read on its own grid
    np.testing.assert_allclose(values[0][valid], (a * np.float32(0.0001) - np.float32(0.1))[valid], rtol=1e-5)


def test_a_converted_float_file_under_a_landsat_name_keeps_its_own_values(tmp_path):
    """The collection's units hold for its uint16 numbers: a float32 file already in reflectance, named as USGS
    names the band, is not scaled a second time."""
    reflectance = np.random.default_rng(9).uniform(0.01, 0.5, (1, 16, 16)).astype(np.float32)
    write_raster(tmp_path / f"{LS_ID}_SR_B4.TIF", reflectance, crs="EPSG:32633",
                 transform=from_origin(500000.0, 5100000.0, 10, 10))
    item = _item(tmp_path, "converted.json", f"{LS_ID}_SR", {"platform": "LANDSAT_8"},
                 {"red": {"href": f"{LS_ID}_SR_B4.TIF", "eo:bands": _eo("B4", "red", 0.65)}})
    values, _, bands = _read({"stac": str(item), "assets": ["red"]})
    assert (bands[0].scale, bands[0].offset) == (1.0, 0.0)
    np.testing.assert_array_equal(values[0], reflectance[0])


def test_a_sentinel2_item_without_units_is_read_as_reflectance_where_its_baseline_says_no_offset(tmp_path):
    """Planetary Computer's sentinel-2-l2a gives no raster:bands: before baseline 04.00 its numbers are
    reflectance × 10000 (the products' quantification); with no baseline stated the offset is unknown: refused."""
    b04 = _tif(tmp_path, b04_name(), 4)
    asset = {"B04": {"href": b04_name(), "roles": ["data"], "eo:bands": _eo("B04", "red", 0.665)}}
    old = _item(tmp_path, "pc_2019.json", "S2A_MSIL2A_20190715", {"platform": "Sentinel-2A",
                                                                  "s2:processing_baseline": "02.12"}, asset)
    values, valid, bands = _read({"stac": str(old), "assets": ["red"]})
    assert (bands[0].scale, bands[0].offset) == (0.0001, 0.0)
    np.testing.assert_allclose(values[0][valid], (b04 * np.float32(0.0001))[b04 != 0], rtol=1e-6)
    stored, _, _ = _read({"stac": str(old), "assets": ["red"], "apply_scale": False})
    np.testing.assert_array_equal(stored[0][valid], b04[b04 != 0])
    unknown = _item(tmp_path, "pc_nobaseline.json", "S2A_MSIL2A_x", {"platform": "Sentinel-2A"}, asset)
    with pytest.raises(InputError, match=r"gives neither raster:bands scale/offset nor s2:processing_baseline"):
        open_scene([{"stac": str(unknown), "assets": ["red"]}])
