"""Reference label layers as real products deliver them: which value is which class, and what is fill.

Each test writes a small file in a product's delivered form (type, colour table, nodata or none, the
``.aux.xml`` that GDAL itself writes for a raster attribute table or category names, by ``gdal_translate``
from a VRT) and checks geoseg against GDAL's own reading (``gdalinfo -json``) and numpy counts.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.accuracy.evaluate import evaluate
from geoseg.accuracy.reference import open_reference
from geoseg.errors import ClassIdError, InputError
from tests.fixtures import TRANSFORM, write_raster, write_regions, write_store
from tests.fixtures import random_blocks as blocky

GDAL_TOOLS = shutil.which("gdal_translate") and shutil.which("gdalinfo")
needs_gdal = pytest.mark.skipif(not GDAL_TOOLS, reason="needs the gdal_translate and gdalinfo commands")


def _gdalinfo(path: Path) -> dict:
    return json.loads(subprocess.run(["gdalinfo", "-json", str(path)], check=True, capture_output=True, text=True).stdout)


def _with_gdal_pam(tmp_path: Path, base: Path, band_xml: str, name: str, *options: str) -> Path:
    """``base`` copied by gdal_translate through a VRT whose band carries ``band_xml`` (a RAT, category
    names): GDAL writes them into ``NAME.aux.xml`` as it does for any GeoTIFF."""
    with rasterio.open(base) as ds:
        h, w, dtype = ds.height, ds.width, {"uint8": "Byte", "int16": "Int16"}[ds.dtypes[0]]
        gt = ",".join(str(v) for v in ds.transform.to_gdal())
    vrt = tmp_path / f"{name}.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32633</SRS><GeoTransform>{gt}</GeoTransform>'
        f'<VRTRasterBand dataType="{dtype}" band="1">{band_xml}<SimpleSource><SourceFilename relativeToVRT="1">'
        f"{base.name}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    out = tmp_path / f"{name}.tif"
    subprocess.run(["gdal_translate", "-q", *options, str(vrt), str(out)], check=True)
    assert Path(str(out) + ".aux.xml").is_file()
    return out


def _rat(fields: list[tuple[str, int, int]], rows: list[tuple], extra: str = "") -> str:
    defs = "".join(f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
                   for i, (n, t, u) in enumerate(fields))
    body = "".join(f'<Row index="{k}">' + "".join(f"<F>{c}</F>" for c in row) + "</Row>" for k, row in enumerate(rows))
    return f'<GDALRasterAttributeTable tableType="thematic"{extra}>{defs}{body}</GDALRasterAttributeTable>'


def _scored_by_reference_class(ev) -> dict[int, int]:
    per = ev.counts[0].sum(axis=1)
    return {int(v): int(n) for v, n in zip(ev.reference_values, per) if n}


def _numpy_counts(values: np.ndarray, left_out: set[int]) -> dict[int, int]:
    u, n = np.unique(values, return_counts=True)
    return {int(a): int(b) for a, b in zip(u, n) if int(a) not in left_out}


# --- Dynamic World: nine probability bands and the label band -------------------------------------------------

DW_BANDS = ("water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built", "bare",
            "snow_and_ice", "label")


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_dynamic_world_export_is_refused_naming_its_label_band(tmp_path: Path, dtype: str) -> None:
    """Band 1 of a Dynamic World export is the water probability: scored as classes before (as uint8
    percentages silently). Refused in one line that names the label band and the command extracting it;
    that command's output is the label band, value for value."""
    rng = np.random.default_rng(5)
    label = rng.integers(0, 9, (32, 32))
    probs = rng.random((9, 32, 32))
    data = np.concatenate([(probs * 100) if dtype == "uint8" else probs, label[None]]).astype(dtype)
    path = write_raster(tmp_path / "dw.tif", data, transform=TRANSFORM, descriptions=DW_BANDS)
    assert [b["description"] for b in _gdalinfo(path)["bands"]][9] == "label" if GDAL_TOOLS else True
    with pytest.raises(InputError, match=r"has 10 bands; band 10 is described 'label'") as exc:
        open_reference(path)
    msg = str(exc.value)
    assert "\n" not in msg and f"gdal_translate -b 10 {path} classes.tif" in msg
    if GDAL_TOOLS:
        subprocess.run(["gdal_translate", "-q", "-b", "10", str(path), str(tmp_path / "classes.tif")], check=True)
        ref = open_reference(tmp_path / "classes.tif")
        store = write_store(tmp_path / "l.zarr", label.astype("uint8"), chunk=16)
        ev = evaluate(store, ref.path)
        assert _scored_by_reference_class(ev) == _numpy_counts(label, set())


def test_several_bands_without_a_described_class_band_are_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "two.tif", np.ones((2, 8, 8), "uint8"), transform=TRANSFORM)
    with pytest.raises(InputError, match=r"has 2 bands: .*gdal_translate -b N "):
        open_reference(path)


def test_a_class_band_with_an_alpha_band_is_one_band_of_classes(tmp_path: Path) -> None:
    classes = blocky((16, 16), 4, 3, seed=1).astype("uint8")
    path = tmp_path / "alpha.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=2, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, photometric="minisblack", alpha="YES") as ds:
        ds.write(np.stack([classes, np.full_like(classes, 255)]))
    if GDAL_TOOLS:
        assert [b["colorInterpretation"] for b in _gdalinfo(path)["bands"]] == ["Gray", "Alpha"]
    assert open_reference(path).mask == "alpha"


# --- USDA Cropland Data Layer: paletted, names in a RAT's Class_Names, 0 "Background" ----------------------------

CDL_ROWS = ["Background", "Corn", "Cotton", "Rice", "", "Sunflower"]


def _cdl(tmp_path: Path, data: np.ndarray, *options: str) -> Path:
    base = write_raster(tmp_path / "cdl_base.tif", data, transform=TRANSFORM)
    with rasterio.open(base, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 211, 0, 255), 2: (255, 38, 38, 255), 3: (0, 168, 228, 255),
                              5: (255, 158, 11, 255)})
    # as CDL's converted .vat.dbf: the names' field has no Name usage, the row is the value
    rat = _rat([("Class_Names", 2, 0), ("Opacity", 0, 0)], [(n, 0 if k == 0 else 255) for k, n in enumerate(CDL_ROWS)])
    return _with_gdal_pam(tmp_path, base, rat, "cdl", *options)


@needs_gdal
def test_cdl_names_come_from_its_rat_and_background_is_refused_where_it_occurs(tmp_path: Path) -> None:
    data = blocky((40, 40), 8, 5, seed=2).astype("uint8")  # 1..5
    data[data == 4] = 5
    data[:6, :] = 0  # outside the state
    path = _cdl(tmp_path, data)
    rat = _gdalinfo(path)["rat"]
    oracle = {row["index"]: row["f"][0] for row in rat["row"] if row["f"][0] and row["index"] != 0}
    assert oracle == {1: "Corn", 2: "Cotton", 3: "Rice", 5: "Sunflower"}
    assert dict(open_reference(path, class_names={0: "background"}).legend) == {**oracle, 0: "Background"}
    store = write_store(tmp_path / "l.zarr", np.where(data == 0, 1, data).astype("uint8"), chunk=16)
    with pytest.raises(ClassIdError, match=r"holds 0, which it names 'Background'") as exc:
        evaluate(store, path)  # found on the file's overview at open time, before any chunk is counted
    msg = str(exc.value)
    assert "\n" not in msg and "reference nodata: 0" in msg and "--reference-nodata 0" in msg
    assert "--class-names 0=NAME" in msg


@needs_gdal
def test_cdl_background_is_left_out_once_declared_nodata_and_scored_once_named_a_class(tmp_path: Path) -> None:
    data = blocky((40, 40), 8, 5, seed=2).astype("uint8")
    data[data == 4] = 5
    data[:6, :] = 0
    labels = np.where(data == 0, 1, data).astype("uint8")
    store = write_store(tmp_path / "l.zarr", labels, chunk=16)
    named = evaluate(store, _cdl(tmp_path, data), class_names={0: "background", 1: "corn"})
    assert _scored_by_reference_class(named) == _numpy_counts(data, set())
    assert named.class_names[0] == "background"
    declared = _cdl(tmp_path, data, "-a_nodata", "0")  # what the refusal says to do (as a copy)
    assert _gdalinfo(declared)["bands"][0]["noDataValue"] == 0
    ev = evaluate(store, declared)
    assert _scored_by_reference_class(ev) == _numpy_counts(data, {0})
    said = evaluate(store, _cdl(tmp_path, data), reference_nodata=0)  # what the refusal says: the file untouched
    assert _scored_by_reference_class(said) == _numpy_counts(data, {0})
    assert 0 not in said.class_names
    assert int(ev.excluded[0, 1]) == int((data == 0).sum())
    assert ev.class_names[5] == "Sunflower"


@needs_gdal
def test_cdl_clip_inside_the_state_has_no_background_and_is_read(tmp_path: Path) -> None:
    data = blocky((40, 40), 8, 3, seed=3).astype("uint8")  # 1..3, no 0
    store = write_store(tmp_path / "l.zarr", data, chunk=16)
    path = _cdl(tmp_path, data)
    ref = open_reference(path)
    assert ref.ambiguous == ((0, "Background"),)
    oracle = {r["index"]: r["f"][0] for r in _gdalinfo(path)["rat"]["row"] if r["f"][0]}
    assert dict(ref.legend) == oracle  # named as the file names them, 0 included: it is refused only where met
    ev = evaluate(store, path)
    assert _scored_by_reference_class(ev) == _numpy_counts(data, set())
    assert int(ev.excluded[0, 2]) == 0


# --- CORINE Land Cover: indexes 1..44 named by a RAT (CODE_18, LABEL3), 48 = NODATA, int8 / uint8 editions -------

CLC = {1: ("111", "Continuous urban fabric"), 12: ("211", "Non-irrigated arable land"),
       23: ("311", "Broad-leaved forest"), 41: ("512", "Water bodies"), 48: ("999", "NODATA")}


@needs_gdal
@pytest.mark.parametrize("edition", ["int8 -128", "uint8 128"])
def test_corine_ids_are_its_indexes_named_by_label3_and_its_nodata_rows_are_left_out(tmp_path: Path, edition: str) -> None:
    dtype, nodata = edition.split()
    rng = np.random.default_rng(7)
    data = rng.choice([1, 12, 23, 41], size=(40, 40)).astype(np.int16)
    data[:4] = int(nodata)  # outside the country: the declared nodata
    data[-3:, :10] = 48  # the RAT's NODATA row (sea, unmapped)
    stored = (data & 0xFF).astype("uint8")  # the bytes as stored; SIGNEDBYTE reads them back signed
    base = write_raster(tmp_path / "clc_base.tif", stored, transform=TRANSFORM)
    rows = [(v, 0, code, label, 10 * k, 20, 30) for k, (v, (code, label)) in enumerate(CLC.items())]
    rat = _rat([("Value", 0, 0), ("Count", 1, 0), ("CODE_18", 2, 0), ("LABEL3", 2, 0), ("Red", 0, 0), ("Green", 0, 0),
                ("Blue", 0, 0)], rows)
    options = ["-a_nodata", nodata] + (["-co", "PIXELTYPE=SIGNEDBYTE"] if dtype == "int8" else [])
    path = _with_gdal_pam(tmp_path, base, rat, f"clc_{dtype}", *options)
    info = _gdalinfo(path)
    assert info["bands"][0]["noDataValue"] == int(nodata)
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == dtype
        read = ds.read(1).astype(np.int16)
    np.testing.assert_array_equal(read, data)  # the values as GDAL reads them: the oracle of the counts below
    oracle = {int(r["f"][0]): r["f"][3] for r in info["rat"]["row"]}
    ref = open_reference(path)
    assert ref.fill == (48,)
    assert dict(ref.legend) == {v: n for v, n in oracle.items() if n != "NODATA"}
    store = write_store(tmp_path / "l.zarr", np.ones((40, 40), "uint8"), chunk=16)
    ev = evaluate(store, path)
    assert _scored_by_reference_class(ev) == _numpy_counts(read, {int(nodata), 48})
    assert int(ev.excluded[0, 1]) == int(np.isin(read, [int(nodata), 48]).sum())
    assert ev.class_names[23] == "Broad-leaved forest" and 48 not in ev.class_names


# --- NLCD: paletted, 0 "Unclassified" in the RAT, 250 declared nodata ----------------------------------------------

@needs_gdal
def test_nlcd_rat_names_with_real_colours_and_unclassified_only_refused_where_met(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    data = rng.choice([11, 21, 41], size=(32, 32)).astype("uint8")
    data[:3] = 250
    base = write_raster(tmp_path / "nlcd_base.tif", data, transform=TRANSFORM)
    names = {0: "Unclassified", 11: "Open Water", 21: "Developed, Open Space", 41: "Deciduous Forest"}
    rows = [(names.get(v, ""), 0, 76, 153 if v else 0) for v in range(42)]  # HFA style: one row per value
    rat = _rat([("NLCD Land Cover Class", 2, 0), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)], rows,
               ' Row0Min="0" BinSize="1"')
    path = _with_gdal_pam(tmp_path, base, rat, "nlcd", "-a_nodata", "250")
    info = _gdalinfo(path)
    oracle = {int(info["rat"].get("row0Min", 0) + r["index"] * info["rat"].get("binSize", 1)): r["f"][0]
              for r in info["rat"]["row"] if r["f"][0]}
    assert oracle == names
    ref = open_reference(path)
    assert ref.ambiguous == ((0, "Unclassified"),) and dict(ref.legend) == oracle
    rgb = {r["index"]: "#{:02x}{:02x}{:02x}".format(*r["f"][1:4]) for r in info["rat"]["row"]}
    assert dict(ref.colors)[41] == rgb[41] == "#004c99"
    store = write_store(tmp_path / "l.zarr", np.full((32, 32), 11, "uint8"), chunk=16)
    ev = evaluate(store, path)
    assert _scored_by_reference_class(ev) == _numpy_counts(data, {250})
    data[10, 10] = 0
    write_raster(tmp_path / "nlcd_base.tif", data, transform=TRANSFORM)
    path = _with_gdal_pam(tmp_path, tmp_path / "nlcd_base.tif", rat, "nlcd0", "-a_nodata", "250")
    with pytest.raises(ClassIdError, match="holds 0, which it names 'Unclassified'"):
        evaluate(store, path)


@needs_gdal
def test_rat_linear_binning_places_rows_as_gdal_does(tmp_path: Path) -> None:
    data = blocky((20, 20), 5, 3, seed=4).astype("uint8")  # 1..3
    base = write_raster(tmp_path / "b.tif", data, nodata=0, transform=TRANSFORM)
    rat = _rat([("Class_Names", 2, 2)], [("crops",), ("woods",), ("water",)], ' Row0Min="1" BinSize="1"')
    path = _with_gdal_pam(tmp_path, base, rat, "binned", "-a_nodata", "0")
    info = _gdalinfo(path)["rat"]
    oracle = {int(info["row0Min"] + r["index"] * info["binSize"]): r["f"][0] for r in info["row"]}
    assert dict(open_reference(path).legend) == oracle == {1: "crops", 2: "woods", 3: "water"}


# --- GDAL category names: "No Data" is left out even when the file declares no nodata ------------------------------

@needs_gdal
def test_category_named_no_data_is_fill_without_a_declared_nodata(tmp_path: Path) -> None:
    data = blocky((30, 30), 6, 4, seed=6).astype("uint8") - 1  # 0..3
    base = write_raster(tmp_path / "c.tif", data, transform=TRANSFORM)
    cats = "".join(f"<Category>{n}</Category>" for n in ["No Data", "crops", "woods", "water"])
    path = _with_gdal_pam(tmp_path, base, f"<CategoryNames>{cats}</CategoryNames>", "cats")
    categories = _gdalinfo(path)["bands"][0]["categories"]
    assert "noDataValue" not in _gdalinfo(path)["bands"][0]
    ref = open_reference(path)
    assert dict(ref.legend) == {i: n for i, n in enumerate(categories) if i != 0}
    store = write_store(tmp_path / "l.zarr", np.ones((30, 30), "uint8"), chunk=16)
    ev = evaluate(store, path)
    assert _scored_by_reference_class(ev) == _numpy_counts(data, {0})
    assert int(ev.excluded[0, 1]) == int((data == 0).sum())
    # the same file with NoData named on two values, one of them declared: both left out
    cats2 = "".join(f"<Category>{n}</Category>" for n in ["NoData", "crops", "woods", "no_data"])
    path2 = _with_gdal_pam(tmp_path, base, f"<CategoryNames>{cats2}</CategoryNames>", "cats2", "-a_nodata", "0")
    ev2 = evaluate(store, path2)
    assert _scored_by_reference_class(ev2) == _numpy_counts(data, {0, 3})


# --- ESA WorldCover / Esri LULC: 0 = no data by product convention, perhaps declared -------------------------------

def _worldcover(tmp_path: Path, nodata: int | None) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(11)
    data = rng.choice([10, 20, 30, 40, 50, 60, 80, 90, 95, 100], size=(48, 48)).astype("uint8")
    data[:, :8] = 0  # beyond the product's coverage
    data[:8, :] = 0
    path = write_raster(tmp_path / f"wc_{nodata}.tif", data, transform=TRANSFORM, nodata=nodata)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 0), 10: (0, 100, 0, 255), 20: (255, 187, 34, 255), 80: (0, 100, 200, 255)})
    return path, data


def test_worldcover_without_declared_nodata_warns_in_one_line_with_the_command(tmp_path: Path, caplog) -> None:
    path, data = _worldcover(tmp_path, None)
    with caplog.at_level(logging.WARNING, logger="geoseg.accuracy.reference"):
        ref = open_reference(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "geoseg.accuracy.reference"]
    assert len(lines) == 1 and "\n" not in lines[0]
    ring = np.concatenate([data[0], data[-1], data[1:-1, 0], data[1:-1, -1]])
    assert f"the value 0 fills {100 * (ring == 0).mean():.0f} % of its border" in lines[0]
    assert "reference nodata: 0 in the job (geoseg evaluate --reference-nodata 0)" in lines[0]
    assert ref.nodata is None  # a warning, not a guess: 0 is still scored
    assert f"{100 * (data == 0).mean():.1f} % of the file" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.accuracy.reference"):
        open_reference(path, warn_fill=False)  # an instance raster's 0 is "no instance", not fill
    assert not [r for r in caplog.records if r.name == "geoseg.accuracy.reference"]


def test_worldcover_and_esri_lulc_with_declared_nodata_leave_0_out_without_a_warning(tmp_path: Path, caplog) -> None:
    path, data = _worldcover(tmp_path, 0)
    store = write_store(tmp_path / "l.zarr", np.full(data.shape, 10, "uint8"), chunk=16)
    with caplog.at_level(logging.WARNING, logger="geoseg.accuracy.reference"):
        ev = evaluate(store, path)
    assert not [r for r in caplog.records if r.name == "geoseg.accuracy.reference"]
    assert _scored_by_reference_class(ev) == _numpy_counts(data, {0})
    assert dict(ev.reference.colors)[80] == "#0064c8" and 0 not in dict(ev.reference.colors)


@needs_gdal
def test_an_ambiguous_value_missed_by_the_overview_is_refused_in_the_window_that_holds_it(tmp_path: Path) -> None:
    """The open-time probe reads an overview; a value only the full resolution holds is refused as read."""
    from rasterio.enums import Resampling

    data = np.ones((600, 600), "uint8")
    data[301, 301] = 0
    base = tmp_path / "base.tif"
    with rasterio.open(base, "w", driver="GTiff", width=600, height=600, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data, 1)
    cats = "<CategoryNames><Category>Background</Category><Category>crops</Category></CategoryNames>"
    path = _with_gdal_pam(tmp_path, base, cats, "bg", "-co", "TILED=YES")
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2], Resampling.nearest)
    with rasterio.open(path) as ds:  # precondition: the overview the probe reads has no 0
        assert not (ds.read(1, out_shape=(300, 300), resampling=Resampling.nearest) == 0).any()
    ref = open_reference(path)
    assert ref.ambiguous == ((0, "Background"),)
    store = write_store(tmp_path / "l.zarr", np.ones((600, 600), "uint8"), chunk=200)
    with pytest.raises(ClassIdError, match="holds 0, which it names 'Background'"):
        evaluate(store, path)


def test_geoseg_own_legend_is_classes_only(tmp_path: Path) -> None:
    """labels.tif written by geoseg names the job's classes (a class may well be called background); its
    fill is the declared 255, so no name of it is taken for fill or refused."""
    data = blocky((20, 20), 5, 3, seed=8).astype("uint8") - 1  # 0..2
    path = write_raster(tmp_path / "labels.tif", data, nodata=255, transform=TRANSFORM)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(GEOSEG_CLASSES=json.dumps([{"id": 0, "name": "background"}, {"id": 1, "name": "building"},
                                                  {"id": 2, "name": "No data"}]))
    ref = open_reference(path)
    assert dict(ref.legend) == {0: "background", 1: "building", 2: "No data"} and not ref.fill and not ref.ambiguous
    ev = evaluate(write_store(tmp_path / "l.zarr", data, chunk=8), path)
    assert _scored_by_reference_class(ev) == _numpy_counts(data, set())


# --- vector references: a class column of codes kept as text (CORINE's vector Code_18) ------------------------------

def test_vector_class_codes_kept_as_text_are_those_ids(tmp_path: Path) -> None:
    """Code_18 of CORINE's vector layers is a text field ("111", "211"): the same figures as the same layer
    with an integer field. Names that are not codes still need the job's classes or a values map."""
    import geopandas as gpd

    rects = [(0, 0, 20, 20), (0, 20, 20, 40), (20, 0, 40, 40)]
    as_int = write_regions(tmp_path / "int.gpkg", rects, [111, 211, 512])
    gdf = gpd.read_file(as_int)
    gdf["Code_18"] = gdf["zone"].astype(str)
    as_text = tmp_path / "text.gpkg"
    gdf.drop(columns="zone").to_file(as_text, driver="GPKG")
    labels = np.zeros((40, 40), "uint8")
    labels[:20, 20:] = 1
    labels[20:] = 2
    store = write_store(tmp_path / "l.zarr", labels, chunk=16)
    a = evaluate(store, as_int, reference_field="zone", mapping="hungarian")
    b = evaluate(store, as_text, reference_field="Code_18", mapping="hungarian")
    np.testing.assert_array_equal(a.counts, b.counts)
    assert list(b.reference_values) == [111, 211, 512] and b.mapping == a.mapping
    gdf["Code_18"] = ["111", "211", "Water bodies"]
    gdf.drop(columns="zone").to_file(tmp_path / "mixed.gpkg", driver="GPKG")
    with pytest.raises(ClassIdError, match="class names without an id: '111', '211', 'Water bodies'"):
        open_reference(tmp_path / "mixed.gpkg", "Code_18")
    twice = {1: "Water", 2: "water", 3: "Forest"}  # one name for two classes, told apart only by case
    gdf["Code_18"] = ["water", "Forest", "Forest"]
    gdf.drop(columns="zone").to_file(tmp_path / "named.gpkg", driver="GPKG")
    with pytest.raises(InputError, match=r"give the name 'water' \(ignoring case\) to classes 1 and 2, and the "
                                         r"reference's polygons carry it"):
        open_reference(tmp_path / "named.gpkg", "Code_18", class_names=twice)
    assert open_reference(tmp_path / "named.gpkg", "Code_18", class_names={**twice, 2: "lake"}).class_ids == (1, 3)


def test_reference_nodata_from_the_cli_and_the_job_leaves_0_out_of_an_undeclared_worldcover(tmp_path: Path) -> None:
    import pandas as pd

    from geoseg.accuracy.evaluate import open_evaluation_inputs
    from geoseg.cli import main
    from geoseg.geo import GeoGrid
    from geoseg.run.jobspec import parse_job
    from geoseg.run.workflow import evaluation_options

    path, data = _worldcover(tmp_path, None)
    store = write_store(tmp_path / "l.zarr", np.full(data.shape, 10, "uint8"), chunk=16)
    assert main(["evaluate", str(store), str(path), "--out", str(tmp_path / "ev"), "--reference-nodata", "0", "-q"]) == 0
    confusion = pd.read_csv(tmp_path / "ev" / "confusion.csv", index_col=0)
    assert "0" not in [str(i) for i in confusion.index]
    assert int(confusion.to_numpy().sum()) == int((data != 0).sum())  # numpy: every pixel but the 0s
    job = parse_job({"name": "wc", "inputs": [str(path)], "output": str(tmp_path / "out"),
                     "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.3},
                     "reference": {"path": str(path), "nodata": [0, 95]}})
    with rasterio.open(path) as ds:
        grid = GeoGrid.of_dataset(ds)
    ref, _ = open_evaluation_inputs(str(path), grid, **{k: v for k, v in evaluation_options(job).items()
                                                        if k != "class_colors"})
    assert set(ref.fill) == {0, 95} and 95 not in dict(ref.legend)
    assert main(["evaluate", str(store), str(path), "--out", str(tmp_path / "ev2"), "--reference-nodata", "zero"]) == 2


def test_the_report_preview_leaves_out_what_the_figures_leave_out(tmp_path: Path) -> None:
    from geoseg.accuracy.report import SENTINEL, read_reference_decimated
    from geoseg.geo import GeoGrid

    path, data = _worldcover(tmp_path, None)
    with rasterio.open(path) as ds:
        grid = GeoGrid.of_dataset(ds)
    drawn = read_reference_decimated(open_reference(path, nodata=[0]), grid)
    np.testing.assert_array_equal(drawn == SENTINEL, data == 0)
    assert (read_reference_decimated(open_reference(path, warn_fill=False), grid) == SENTINEL).sum() == 0
