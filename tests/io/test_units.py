"""Units: STAC ``raster:bands`` and GeoTIFF scale/offset applied per band, in float32, before features and
indices; ``apply_scale: false``; no work at all for files stored in their own units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.threshold import resolve_index
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import SPECTRA, blocky_classes, write_raster

H, W = 96, 120
SCALE, OFFSET = 0.0001, -0.1
ROLES = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}


def _dn() -> np.ndarray:
    """Sentinel-2 L2A-like digital numbers: reflectance × 10000 + 1000, uint16."""
    rng = np.random.default_rng(3)
    img = SPECTRA[blocky_classes(H, W, cell=23)].transpose(2, 0, 1) + rng.normal(0, 40, (4, H, W)) + 1000
    return np.clip(img, 1, None).astype("uint16")


def _reflectance(dn: np.ndarray) -> np.ndarray:
    """The oracle: ``dn × scale + offset`` in float32, as a product's documentation says."""
    return dn.astype(np.float32) * np.float32(SCALE) + np.float32(OFFSET)


def _item(folder, scaled: bool) -> str:
    assets = {}
    for key, role in ROLES.items():
        asset = {"href": f"./{key}.tif", "eo:bands": [{"name": key, "common_name": role}]}
        if scaled:
            asset["raster:bands"] = [{"scale": SCALE, "offset": OFFSET, "data_type": "uint16"}]
        assets[key] = asset
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "s2", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "links": [], "assets": assets}
    (folder / "item.json").write_text(json.dumps(item))
    return str(folder / "item.json")


@pytest.fixture()
def products(tmp_path):
    dn = _dn()
    (tmp_path / "dn").mkdir()
    (tmp_path / "refl").mkdir()
    for i, key in enumerate(ROLES):
        write_raster(tmp_path / "dn" / f"{key}.tif", dn[i])
        write_raster(tmp_path / "refl" / f"{key}.tif", _reflectance(dn[i]))
    return dn, _item(tmp_path / "dn", scaled=True), _item(tmp_path / "refl", scaled=False)


def _read(scene):
    return read_window(scene, Window(0, 0, H, W))


def test_scaled_stac_item_reads_as_reflectance_and_ndvi_is_the_reflectance_ndvi(products):
    dn, scaled, prescaled = products
    a, b = open_scene([{"stac": scaled}]), open_scene([{"stac": prescaled}])
    (da, va), (db, vb) = _read(a), _read(b)
    assert da.dtype == np.float32 and da.tobytes() == db.tobytes() and va.all() and vb.all()
    refl = _reflectance(dn)
    red, nir = refl[2], refl[3]
    np.testing.assert_array_equal(resolve_index("ndvi", a.bands).compute(da)[0],
                                  (nir - red) / (nir + red + np.float32(1e-6)))
    assert [(b.scale, b.offset) for b in a.bands] == [(SCALE, OFFSET)] * 4
    raw = open_scene([{"stac": scaled, "apply_scale": False}])
    assert _read(raw)[0].tobytes() == dn.astype(np.float32).tobytes() and raw.bands[0].scale == 1.0


def test_geotiff_scale_and_offset_metadata_are_applied(tmp_path):
    dn = _dn()
    path = write_raster(tmp_path / "scaled.tif", dn, descriptions=list(ROLES.values()))
    with rasterio.open(path, "r+") as ds:
        ds.scales = (SCALE,) * 4
        ds.offsets = (OFFSET,) * 4
    scene = open_scene(str(path))
    assert scene.layers[0].sources[0].scales == (SCALE,) * 4
    assert _read(scene)[0].tobytes() == _reflectance(dn).tobytes()
    assert _read(open_scene([{"path": str(path), "apply_scale": False}]))[0].tobytes() == dn.astype(np.float32).tobytes()
    plain = open_scene(str(write_raster(tmp_path / "plain.tif", dn)))
    assert plain.layers[0].sources[0].scales == ()  # stored in its own units: the read path does nothing more


def _item_v11(folder, per_band: bool) -> str:
    """A STAC 1.1 item as current catalogs write Sentinel-2 L2A: one ``bands`` list per asset
    (``eo:common_name``), and units and fill as ``raster:scale``/``raster:offset``/``nodata``, on the asset
    (``per_band=False``) or on its band."""
    units = {"raster:scale": SCALE, "raster:offset": OFFSET, "nodata": 0}
    assets = {}
    for key, role in ROLES.items():
        band = {"name": key, "eo:common_name": role, **(units if per_band else {})}
        assets[f"{key}_10m"] = {"href": f"./{key}.tif", "bands": [band], **({} if per_band else units)}
    assets["SCL_20m"] = {"href": "./SCL.tif", "bands": [{"name": "SCL"}], "nodata": 0}  # classes, not a feature
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "s2-v11", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"datetime": "2024-06-01T00:00:00Z", "platform": "sentinel-2a"}, "links": [],
            "assets": assets}
    path = folder / f"item-{'band' if per_band else 'asset'}.json"
    path.write_text(json.dumps(item))
    return str(path)


@pytest.mark.parametrize("per_band", [False, True])
def test_stac_1_1_bands_give_roles_units_and_fill(tmp_path, per_band):
    dn = _dn()
    dn[:, :, :10] = 0  # outside the orbit's swath: fill, which the files do not declare
    for i, key in enumerate(ROLES):
        write_raster(tmp_path / f"{key}.tif", dn[i])
    item = _item_v11(tmp_path, per_band)
    for assets in (["blue", "green", "red", "nir"], ["B02_10m", "B03_10m", "B04_10m", "B08_10m"]):
        scene = open_scene([{"stac": item, "assets": assets}])
        assert [(b.role, b.scale, b.offset, b.nodata) for b in scene.bands] == [
            (r, SCALE, OFFSET, 0.0) for r in ROLES.values()]
        data, valid = _read(scene)
        np.testing.assert_array_equal(valid, dn[0] != 0)
        np.testing.assert_array_equal(data[:, valid], _reflectance(dn)[:, valid])
    assert open_scene([{"stac": item}]).count == 4  # every asset with bands, as with 1.0's eo:bands


def test_stac_units_for_another_band_count_than_the_file_are_refused(tmp_path):
    from geoseg.errors import InputError

    write_raster(tmp_path / "rgb.tif", _dn()[:3])
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"datetime": "2024-06-01T00:00:00Z"},
            "links": [], "assets": {"visual": {"href": "./rgb.tif", "raster:bands": [{"scale": SCALE, "offset": OFFSET}]}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(InputError, match=r"scale/offset for 1 band\(s\) but the file has 3"):
        open_scene([{"stac": str(tmp_path / "item.json"), "assets": ["visual"]}])
    assert open_scene([{"stac": str(tmp_path / "item.json"), "assets": ["visual"], "apply_scale": False}]).count == 3


def test_scaled_item_and_prescaled_reflectance_give_identical_labels(products, tmp_path, dask_client):
    _, scaled, prescaled = products
    base = {"chunk_size": 64, "vectorize": {"enabled": False}}
    methods = {"km": {"kind": "kmeans", "n_clusters": 4, "sample_size": 3000, "features": {"indices": ["ndvi"]}},
               "otsu": {"kind": "threshold", "index": "ndvi", "threshold": "otsu", "sample_size": 3000}}
    for name, method in methods.items():
        labels = []
        for tag, item in (("scaled", scaled), ("prescaled", prescaled)):
            out = tmp_path / f"{name}-{tag}"
            run_job(parse_job({**base, "name": name, "output": str(out), "inputs": [{"stac": item}], "method": method}),
                    client=dask_client, show_progress=False)
            with rasterio.open(out / "labels.zarr") as ds:
                labels.append(ds.read(1))
        assert labels[0].tobytes() == labels[1].tobytes(), name
        assert len(np.unique(labels[0])) >= 2
    record = json.loads((tmp_path / "otsu-scaled" / "run.json").read_text())
    assert {(b["role"], b["scale"], b["offset"]) for b in record["scene"]["band_roles"]} == {
        (r, SCALE, OFFSET) for r in ROLES.values()}


def test_lazy_xarray_view_applies_units_and_the_inputs_nodata(tmp_path):
    from geoseg.io.scene import open_scene_xarray

    dn = _dn()
    dn[:, :8, :8] = 0
    path = write_raster(tmp_path / "scaled.tif", dn)
    with rasterio.open(path, "r+") as ds:
        ds.scales = (SCALE,) * 4
        ds.offsets = (OFFSET,) * 4
    values = open_scene_xarray(open_scene([{"path": str(path), "nodata": 0}]), chunk=64).values
    expected = np.where(dn[0] == 0, np.float32(np.nan), _reflectance(dn))
    np.testing.assert_array_equal(values, expected)
    plain = open_scene_xarray(open_scene(str(write_raster(tmp_path / "plain.tif", dn))), chunk=64)
    assert plain.dtype == np.uint16  # files in their own units open as they are


LANDSAT = "LC08_L2SP_190028_20230715_20230725_02_T1"


def _landsat_delivery(folder, mtl: str | None) -> dict[str, np.ndarray]:
    """A Landsat 8 Collection 2 Level-2 scene as USGS ships it: uint16 band files (nodata 0) that declare
    no scale, the scale and offset only in the product's MTL (``json`` or ``txt``) beside them."""
    rng = np.random.default_rng(5)
    dn = {f"SR_B{b}": rng.integers(7500, 20000, (H, W)).astype(np.uint16) for b in (2, 3, 4, 5)}
    dn["ST_B10"] = rng.integers(40000, 50000, (H, W)).astype(np.uint16)
    for d in dn.values():
        d[:, :7] = 0  # outside the scene
    for name, d in dn.items():
        write_raster(folder / f"{LANDSAT}_{name}.TIF", d, nodata=0)
    sr = {f"REFLECTANCE_{k}_BAND_{b}": v for b in range(1, 8) for k, v in (("MULT", "2.75E-05"), ("ADD", "-0.200000"))}
    st = {"TEMPERATURE_MULT_BAND_ST_B10": "0.00341802", "TEMPERATURE_ADD_BAND_ST_B10": "149.000000"}
    # the Level-1 group comes later and uses the same keys for top-of-atmosphere reflectance
    toa = {f"REFLECTANCE_{k}_BAND_{b}": v for b in range(1, 10) for k, v in (("MULT", "2.0000E-05"), ("ADD", "-0.100000"))}
    groups = {"LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": sr, "LEVEL2_SURFACE_TEMPERATURE_PARAMETERS": st,
              "LEVEL1_RADIOMETRIC_RESCALING": toa}
    if mtl == "json":
        (folder / f"{LANDSAT}_MTL.json").write_text(json.dumps({"LANDSAT_METADATA_FILE": groups}, indent=2))
    elif mtl == "txt":
        lines = ["GROUP = LANDSAT_METADATA_FILE"]
        for name, values in groups.items():
            lines += [f"  GROUP = {name}", *(f"    {k} = {v}" for k, v in values.items()), f"  END_GROUP = {name}"]
        (folder / f"{LANDSAT}_MTL.txt").write_text("\n".join([*lines, "END_GROUP = LANDSAT_METADATA_FILE", "END"]) + "\n")
    return dn


@pytest.mark.parametrize("mtl", ["json", "txt"])
def test_landsat_collection2_band_files_take_their_units_from_the_mtl(tmp_path, mtl):
    dn = _landsat_delivery(tmp_path, mtl)
    files = [str(tmp_path / f"{LANDSAT}_{name}.TIF") for name in dn]
    scene = open_scene([{"path": files, "kind": "bands"}], sensor="landsat8")
    assert [b.role for b in scene.bands] == ["blue", "green", "red", "nir08", "lwir11"]
    assert [(b.scale, b.offset) for b in scene.bands] == [(2.75e-05, -0.2)] * 4 + [(0.00341802, 149.0)]
    data, valid = _read(scene)
    np.testing.assert_array_equal(valid, dn["SR_B4"] != 0)
    red = dn["SR_B4"].astype(np.float32) * np.float32(2.75e-05) + np.float32(-0.2)
    nir = dn["SR_B5"].astype(np.float32) * np.float32(2.75e-05) + np.float32(-0.2)
    np.testing.assert_array_equal(data[2][valid], red[valid])
    ndvi = resolve_index("ndvi", scene.bands).compute(data)[0]  # the reflectance NDVI, not the numbers'
    np.testing.assert_allclose(ndvi[valid], ((nir - red) / (nir + red + np.float32(1e-6)))[valid], rtol=1e-5)
    raw = open_scene([{"path": files, "kind": "bands", "apply_scale": False}], sensor="landsat8")
    assert _read(raw)[0].tobytes() == np.stack(list(dn.values())).astype(np.float32).tobytes()


def test_landsat_collection2_band_without_its_mtl_is_refused(tmp_path):
    from geoseg.errors import InputError

    _landsat_delivery(tmp_path, None)
    band = str(tmp_path / f"{LANDSAT}_SR_B4.TIF")
    with pytest.raises(InputError, match=f"Landsat Collection 2 Level-2 band.*{LANDSAT}_MTL.json .or .txt, .xml. is not "
                                         "beside it; put it there, give the input its units .SR: scale: 0.0000275, "
                                         "offset: -0.2., or set apply_scale: false"):
        open_scene([band], sensor="landsat8")
    assert open_scene([{"path": band, "apply_scale": False}]).bands[0].scale == 1.0
    told = open_scene([{"path": band, "scale": 0.0000275, "offset": -0.2}]).bands[0]
    assert (told.scale, told.offset) == (0.0000275, -0.2)


def _safe(folder, level: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """A Sentinel-2 SAFE of processing baseline 05.10 as Copernicus ships it: JPEG 2000 band files in
    ``GRANULE/*/IMG_DATA`` declaring neither units nor fill; quantification, offset (−1000) and NODATA (0)
    only in the product's ``MTD_MSIL2A.xml`` (L2A) or ``MTD_MSIL1C.xml`` (L1C) at the SAFE's root."""
    safe = folder / f"S2A_MSI{level}_20240601T100031_N0510_R122_T33TWM_20240601T140000.SAFE"
    img = safe / "GRANULE" / f"{level}_T33TWM_A046000_20240601T100031" / "IMG_DATA"
    img = img / "R10m" if level == "L2A" else img
    img.mkdir(parents=True)
    dn = dict(zip(("B04", "B08"), _dn()[2:]))
    paths = []
    for band, d in dn.items():
        d[:, :9] = 0  # beyond the swath
        paths.append(str(img / (f"T33TWM_20240601T100031_{band}" + ("_10m" if level == "L2A" else "") + ".jp2")))
        with rasterio.open(paths[-1], "w", driver="JP2OpenJPEG", width=W, height=H, count=1, dtype="uint16",
                           crs="EPSG:32633", transform=rasterio.transform.from_origin(500000, 5000000, 10, 10),
                           QUALITY=100, REVERSIBLE=True) as ds:
            ds.write(d, 1)
    boa = level == "L2A"
    offsets = "".join(f'<{"BOA" if boa else "RADIO"}_ADD_OFFSET band_id="{i}">-1000</{"BOA" if boa else "RADIO"}_ADD_OFFSET>'
                      for i in range(13))
    quantification = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000</BOA_QUANTIFICATION_VALUE>"
                      "<AOT_QUANTIFICATION_VALUE unit=\"none\">1000.0</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>"
                      if boa else "<QUANTIFICATION_VALUE unit=\"none\">10000</QUANTIFICATION_VALUE>")
    (safe / f"MTD_MSI{level}.xml").write_text(
        f'<?xml version="1.0"?><n1:Level-{level[1:]}_User_Product xmlns:n1="x"><n1:General_Info>'
        f"<Product_Image_Characteristics><Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>"
        f"<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>{quantification}"
        f"<{'BOA_ADD_OFFSET_VALUES_LIST' if boa else 'Radiometric_Offset_List'}>{offsets}"
        f"</{'BOA_ADD_OFFSET_VALUES_LIST' if boa else 'Radiometric_Offset_List'}></Product_Image_Characteristics>"
        f"</n1:General_Info></n1:Level-{level[1:]}_User_Product>")
    return paths, dn


@pytest.mark.parametrize("level", ["L2A", "L1C"])
def test_sentinel2_safe_bands_take_units_and_fill_from_the_products_metadata(tmp_path, level):
    paths, dn = _safe(tmp_path, level)
    scene = open_scene([{"path": paths, "kind": "bands"}], sensor="sentinel2")
    assert [(b.role, b.scale, b.offset, b.nodata) for b in scene.bands] == [("red", 1e-4, -0.1, 0.0),
                                                                          ("nir", 1e-4, -0.1, 0.0)]
    data, valid = _read(scene)
    np.testing.assert_array_equal(valid, dn["B04"] != 0)  # the swath's edge is nodata, not a dark class
    for i, d in enumerate(dn.values()):
        expected = d.astype(np.float32) * np.float32(1e-4) + np.float32(-0.1)
        np.testing.assert_array_equal(data[i][valid], expected[valid])


def test_sentinel2_band_out_of_its_safe_is_refused(tmp_path):
    from geoseg.errors import InputError

    paths, _ = _safe(tmp_path, "L2A")
    loose = tmp_path / Path(paths[0]).name
    Path(paths[0]).rename(loose)
    with pytest.raises(InputError, match="is a Sentinel-2 band.*no MTD_MSIL2A.xml or MTD_MSIL1C.xml is in its folder"):
        open_scene([str(loose)], sensor="sentinel2")
    assert open_scene([{"path": str(loose), "apply_scale": False}]).bands[0].scale == 1.0


def test_sentinel2_offset_tags_of_a_gdal_translated_safe_are_applied(tmp_path):
    """``gdal_translate SENTINEL2_L2A:MTD_MSIL2A.xml:10m:EPSG_32633 s2.tif`` keeps the driver's metadata but
    sets no GDAL scale/offset and no nodata: ``BOA_ADD_OFFSET`` per band, ``BOA_QUANTIFICATION_VALUE`` and
    ``SPECIAL_VALUE_NODATA`` on the dataset. They are the file's units and fill."""
    from rasterio.enums import ColorInterp

    dn = _dn()
    dn[:, :, :6] = 0
    path = write_raster(tmp_path / "s2_10m.tif", dn)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(BOA_QUANTIFICATION_VALUE="10000", SPECIAL_VALUE_NODATA="0", SPECIAL_VALUE_SATURATED="65535")
        for i, name in enumerate(("B2", "B3", "B4", "B8"), start=1):
            ds.update_tags(i, BANDNAME=name, BOA_ADD_OFFSET="-1000")
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.nir]
    scene = open_scene([str(path)])
    assert [(b.role, b.scale, b.offset, b.nodata) for b in scene.bands] == [
        (r, SCALE, OFFSET, 0.0) for r in ROLES.values()]
    data, valid = _read(scene)
    np.testing.assert_array_equal(valid, dn[0] != 0)
    np.testing.assert_array_equal(data[:, valid], _reflectance(dn)[:, valid])
    assert _read(open_scene([{"path": str(path), "apply_scale": False}]))[0][:, valid].tobytes() == \
        dn[:, valid].astype(np.float32).tobytes()


@pytest.mark.parametrize("scale", [0.0, float("nan")])
def test_a_scale_that_makes_every_value_the_same_is_refused(tmp_path, scale):
    from geoseg.errors import InputError

    path = write_raster(tmp_path / "scale0.tif", _dn())
    with rasterio.open(path, "r+") as ds:
        ds.scales = (scale,) * 4
    with pytest.raises(InputError, match="band 1 has scale .* which make every value the same"):
        open_scene([str(path)])
    assert _read(open_scene([{"path": str(path), "apply_scale": False}]))[0].tobytes() == _dn().astype(np.float32).tobytes()


def _pc_item(folder, baseline: str) -> str:
    """A Sentinel-2 L2A item as some catalogs serve it: eo:bands common names, the processing baseline, and no
    raster:bands scale or offset, over digital numbers that carry the baseline's +1000 from 04.00 on."""
    assets = {key: {"href": f"./{key}.tif", "eo:bands": [{"name": key, "common_name": role}]}
              for key, role in ROLES.items()}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": f"S2B_MSIL2A_{baseline}", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]}, "links": [], "assets": assets,
            "properties": {"datetime": "2024-06-01T00:00:00Z", "platform": "Sentinel-2B",
                           "s2:processing_baseline": baseline, "s2:product_type": "S2MSI2A"}}
    path = folder / f"item-{baseline}.json"
    path.write_text(json.dumps(item))
    return str(path)


def test_sentinel2_item_of_a_shifted_baseline_without_units_is_refused_until_the_job_gives_them(tmp_path):
    from geoseg.errors import InputError

    dn = _dn()
    for i, key in enumerate(ROLES):
        write_raster(tmp_path / f"{key}.tif", dn[i])
    item = _pc_item(tmp_path, "05.10")
    with pytest.raises(InputError, match="processing baseline 05.10.*add scale: 0.0001 and offset: -0.1 to the input"):
        open_scene([{"stac": item}])
    told = open_scene([{"stac": item, "scale": SCALE, "offset": OFFSET}])
    assert [(b.role, b.scale, b.offset) for b in told.bands] == [(r, SCALE, OFFSET) for r in ROLES.values()]
    assert _read(told)[0].tobytes() == _reflectance(dn).tobytes()
    assert open_scene([{"stac": item, "apply_scale": False}]).bands[0].scale == 1.0
    before = open_scene([{"stac": _pc_item(tmp_path, "03.01")}])  # no offset before 04.00: reflectance × 10000
    assert [(b.scale, b.offset) for b in before.bands] == [(SCALE, 0.0)] * len(ROLES)


def test_an_inputs_scale_and_offset_are_the_users_word(tmp_path):
    from geoseg.errors import InputError

    path = write_raster(tmp_path / "dn.tif", _dn())
    with rasterio.open(path, "r+") as ds:
        ds.scales, ds.offsets = (1e-3,) * 4, (0.0,) * 4  # wrong units in the file
    scene = open_scene([{"path": str(path), "scale": SCALE, "offset": OFFSET}])
    assert _read(scene)[0].tobytes() == _reflectance(_dn()).tobytes()
    for bad, message in (({"scale": 0}, "would make every value the same"),
                         ({"scale": SCALE, "apply_scale": False}, "contradict each other")):
        with pytest.raises(InputError, match=message):
            open_scene([{"path": str(path), **bad}])
