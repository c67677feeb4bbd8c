"""The run's STAC item: valid offline (pystac's core schemas + extension schemas shipped with the tests),
loadable by odc-stac to the same array as ``open_labels``; the sample band item carries ``proj:*``."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import rasterio

from geoseg.legend import ClassInfo
from tests.fixtures import validate_stac_offline as validate_offline
from tests.fixtures import write_store


def test_item_of_a_label_store_validates_and_odc_stac_reads_it(tmp_path):
    import odc.stac
    import pystac

    import geoseg
    from geoseg.io.labelstore import read_label_info
    from geoseg.io.stacout import write_run_item

    labels = np.random.default_rng(0).integers(0, 3, (90, 130)).astype(np.uint8)
    labels[:5, :7] = 255
    legend = (ClassInfo(0, "open water", "#1f78b4"), ClassInfo(1, "forest", "#33a02c"), ClassInfo(2, "bare", "#a0522d"))
    store = write_store(tmp_path / "labels.zarr", labels, 64, legend=legend)
    (tmp_path / "metrics.csv").write_text("class_id,iou\n0,0.5\n")
    path = write_run_item(tmp_path, {"labels": store, "metrics": tmp_path / "metrics.csv", "input": "/elsewhere/x.tif"},
                          item_id="unit", labels=read_label_info(store))
    data = json.loads(path.read_text())
    used = validate_offline(data)
    assert len(used) == 5  # the item schema and four extensions, each from a local file
    assert set(data["assets"]) == {"labels", "metrics"}  # a path outside the folder is not an asset
    metrics = data["assets"]["metrics"]
    assert metrics["file:checksum"] == "1220" + hashlib.sha256(b"class_id,iou\n0,0.5\n").hexdigest()
    assert metrics["file:size"] == 19
    classes = {c["value"]: c for c in data["assets"]["labels"]["classification:classes"]}
    assert classes[0]["name"] == "open_water" and classes[0]["title"] == "open water"
    assert classes[0]["color_hint"] == "1F78B4" and classes[255]["nodata"] is True
    assert data["properties"]["proj:code"] == "EPSG:32633" and data["properties"]["proj:shape"] == [90, 130]
    with rasterio.open(store) as ds:  # the item's grid is GDAL's
        assert data["properties"]["proj:transform"][:6] == list(ds.transform)[:6]

    loaded = odc.stac.load([pystac.Item.from_file(str(path))], bands=["labels"])
    got = loaded["labels"].isel(time=0)
    assert got.dtype == np.uint8 and got.attrs["nodata"] == 255
    np.testing.assert_array_equal(got.values, geoseg.open_labels(store).values)
    np.testing.assert_array_equal(got.x.values, geoseg.open_labels(store).x.values)


def test_the_confidence_asset_says_its_nodata_and_unit_to_odc_stac(tmp_path):
    """``confidence.zarr`` (DeepLab's probability of the chosen class, 0-100 %, 255 = nodata): odc-stac
    must mask its nodata, not read 255 as a 255 % confidence, and see no class legend on it."""
    import odc.stac
    import pystac

    from geoseg.io.labelstore import LabelStoreWriter, read_label_info
    from geoseg.io.stacout import write_run_item
    from geoseg.run.labelling import CONFIDENCE_ARRAY, CONFIDENCE_ATTRS
    from tests.fixtures import chunk_grid

    labels = np.ones((64, 64), np.uint8)
    labels[:8, :8] = 255
    store = write_store(tmp_path / "labels.zarr", labels, 32)
    conf = np.where(labels == 255, 255, 80).astype(np.uint8)
    grid = chunk_grid(64, 64, 32)
    writer = LabelStoreWriter.create(tmp_path / "confidence.zarr", grid, (), attrs=CONFIDENCE_ATTRS,
                                     dtype="uint8", fill_value=255, array=CONFIDENCE_ARRAY)
    for w in grid.windows():
        writer.write(w, conf[w.slices])
    confidence = writer.finalize()
    path = write_run_item(tmp_path, {"labels": store, "confidence": confidence}, item_id="conf",
                          labels=read_label_info(store))
    asset = json.loads(path.read_text())["assets"]["confidence"]
    assert asset["raster:bands"] == [{"nodata": 255, "data_type": "uint8", "spatial_resolution": 10.0, "unit": "percent"}]
    assert "classification:classes" not in asset
    validate_offline(json.loads(path.read_text()))
    got = odc.stac.load([pystac.Item.from_file(str(path))], bands=["confidence"])["confidence"].isel(time=0)
    assert got.dtype == np.uint8 and got.attrs["nodata"] == 255
    np.testing.assert_array_equal(got.values, conf)

def test_item_of_chips_has_no_place_but_its_local_grid(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    from geoseg.io.labelstore import read_label_info
    from geoseg.io.stacout import write_run_item
    from geoseg.methods.training.chips import CHIP_CRS_WKT

    store = write_store(tmp_path / "labels.zarr", np.zeros((32, 48), np.uint8), 32,
                        transform=Affine(0.01, 0, 0, 0, -0.01, 0.32), crs=CRS.from_wkt(CHIP_CRS_WKT))
    data = json.loads(write_run_item(tmp_path, {"labels": store}, item_id="chips",
                                     labels=read_label_info(store)).read_text())
    validate_offline(data)
    assert data["geometry"] is None and "bbox" not in data
    assert data["properties"]["proj:code"] is None and "LOCAL_CS" in data["properties"]["proj:wkt2"]


def test_invalid_item_is_refused_offline(tmp_path):
    from pystac.errors import STACValidationError

    from geoseg.io.labelstore import read_label_info
    from geoseg.io.stacout import build_run_item

    store = write_store(tmp_path / "labels.zarr", np.zeros((16, 16), np.uint8), 16)
    data = build_run_item(tmp_path, {"labels": store}, item_id="bad", labels=read_label_info(store)).to_dict(
        include_self_link=False, transform_hrefs=False)
    data["assets"]["labels"]["classification:classes"][0]["color_hint"] = "#2166ac"  # not RRGGBB
    with pytest.raises(STACValidationError, match="classification"):
        validate_offline(data)


def test_sample_band_item_carries_proj_and_odc_stac_loads_it(tmp_path):
    import odc.stac
    import pystac

    from geoseg.samples.products import make_band_files
    from geoseg.samples.synthetic import make_scene

    files = make_scene("landcover", tmp_path, width=120, height=120, seed=1)
    product = make_band_files(files.image, tmp_path / "S2")
    data = json.loads(product.item.read_text())
    validate_offline(data)
    assert data["properties"]["proj:code"] == "EPSG:32633"
    item = pystac.Item.from_file(str(product.item))
    ds = odc.stac.load([item], bands=["B04", "B8A", "SCL"])  # no CRS or resolution given: from proj:*
    for key in ("B04", "B8A", "SCL"):
        path = product.scl if key == "SCL" else product.bands[key]
        with rasterio.open(path) as src:
            native = odc.stac.load([item], bands=[key]).isel(time=0)[key]
            assert native.shape == (src.height, src.width)
            np.testing.assert_array_equal(native.values, src.read(1))
    assert ds["B04"].shape[1:] == (120, 120)  # the finest band's grid
