"""Raster references as users have them: any numeric type, class names from the file's side-car."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from geoseg.accuracy.evaluate import evaluate
from geoseg.accuracy.reference import open_reference
from geoseg.errors import InputError
from tests.fixtures import TRANSFORM, write_raster, write_store
from tests.fixtures import random_blocks as blocky


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint32", "int64"])
@pytest.mark.parametrize("shifted", [False, True], ids=["aligned", "warped"])
def test_integral_float_reference_equals_its_integer_copy(tmp_path: Path, dtype: str, shifted: bool) -> None:
    """Same figures, counts and exclusions as the integer copy, aligned or warped, with nodata and NaN."""
    labels = blocky((40, 50), 6, 4, seed=1)
    truth = blocky((40, 50), 7, 5, seed=2)  # 1..5, 0 = nodata below
    truth[:5, :9] = 0
    transform = TRANSFORM * Affine.translation(0.5, 0.25) if shifted else TRANSFORM
    as_int = write_raster(tmp_path / "int.tif", truth.astype("int16"), nodata=0, transform=transform)
    data = truth.astype(dtype)
    if dtype.startswith("float"):
        data[30:, 40:] = np.nan  # NaN counts as nodata too
        ref_int = truth.astype("int16")
        ref_int[30:, 40:] = 0
        as_int = write_raster(tmp_path / "int.tif", ref_int, nodata=0, transform=transform)
    other = write_raster(tmp_path / f"{dtype}.tif", data, nodata=0, transform=transform)
    store = write_store(tmp_path / "l.zarr", labels, chunk=16)
    a = evaluate(store, as_int, grid_cell_m=200)
    b = evaluate(store, other, grid_cell_m=200)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.excluded, b.excluded)
    pd.testing.assert_frame_equal(a.metrics(), b.metrics())
    assert int(a.excluded[0, 1]) >= 45


def test_non_integral_value_is_named_with_its_pixel(tmp_path: Path) -> None:
    labels = blocky((30, 30), 5, 3, seed=1)
    data = blocky((30, 30), 5, 3, seed=2).astype("float32")
    data[17, 23] = 2.5
    ref = write_raster(tmp_path / "f.tif", data, transform=TRANSFORM)
    store = write_store(tmp_path / "l.zarr", labels, chunk=10)
    with pytest.raises(InputError, match=r"f\.tif holds 2\.5 at pixel \(row 17, col 23\)") as exc:
        evaluate(store, ref)
    assert "\n" not in str(exc.value)


def test_class_names_and_colours_from_a_raster_attribute_table(tmp_path: Path) -> None:
    """GDAL's PAM side-car: a thematic RAT (value, name, red/green/blue) names and colours the classes."""
    data = blocky((20, 20), 5, 3, seed=3)
    ref = write_raster(tmp_path / "rat.tif", data, nodata=0, transform=TRANSFORM)
    rows = "".join(
        f'<Row index="{i}"><F>{v}</F><F>{n}</F><F>{r}</F><F>{g}</F><F>{b}</F></Row>'
        for i, (v, n, r, g, b) in enumerate([(1, "wheat", 250, 200, 10), (2, "oak forest", 0, 100, 0), (3, "lake", 0, 0, 255)])
    )
    fields = "".join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
        for i, (n, t, u) in enumerate([("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)])
    )
    Path(str(ref) + ".aux.xml").write_text(
        f'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">{fields}{rows}'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    r = open_reference(ref)
    assert dict(r.legend) == {1: "wheat", 2: "oak forest", 3: "lake"}
    assert dict(r.colors) == {1: "#fac80a", 2: "#006400", 3: "#0000ff"}
    store = write_store(tmp_path / "l.zarr", data, chunk=8)
    ev = evaluate(store, ref)
    assert ev.class_names[2] == "oak forest" and ev.class_colors[3] == "#0000ff"


def test_class_names_from_gdal_category_names(tmp_path: Path) -> None:
    data = blocky((20, 20), 5, 3, seed=3)
    ref = write_raster(tmp_path / "cat.tif", data, nodata=0, transform=TRANSFORM)
    cats = "".join(f"<Category>{n}</Category>" for n in ["no data", "crops", "woods", "water"])
    Path(str(ref) + ".aux.xml").write_text(
        f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{cats}</CategoryNames></PAMRasterBand></PAMDataset>'
    )
    assert dict(open_reference(ref).legend) == {1: "crops", 2: "woods", 3: "water"}  # 0 is nodata


@pytest.mark.parametrize("photometric", ["RGB", "YCBCR"])
def test_a_reference_drawn_in_colours_is_refused_not_read_as_its_red_band(tmp_path: Path, photometric: str) -> None:
    """Label maps shipped as RGB pictures (red buildings, green trees) hold colours, not class ids: band 1
    alone would score red values (0 and 255 here) as classes without a word."""
    import rasterio

    classes = blocky((64, 64), 8, 3, seed=4) - 1
    palette = np.array([[0, 128, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    path = tmp_path / "reference_rgb.tif"
    options = {"compress": "jpeg", "tiled": True, "blockxsize": 32, "blockysize": 32} if photometric == "YCBCR" else {}
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, photometric=photometric, **options) as ds:
        ds.write(palette[classes].transpose(2, 0, 1))
    store = write_store(tmp_path / "l.zarr", classes.astype("uint8") + 1, chunk=32)
    with pytest.raises(InputError, match="is an RGB image .3 bands.: its colours are not class ids"):
        evaluate(store, path, grid_cell_m=200)
    # the same map as one band of ids with a colour table (a palette raster) is a reference
    paletted = write_raster(tmp_path / "reference_ids.tif", classes.astype("uint8"))
    with rasterio.open(paletted, "r+") as ds:
        ds.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(palette)})
    assert open_reference(str(paletted), None).kind == "raster"
