"""Per-band products at several resolutions, their scene classification, and the same as a STAC item."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.products import SCL_DROP, make_band_files
from geoseg.samples.synthetic import make_scene

ASSETS = ["blue", "green", "red", "nir08"]  # common names; nir08 is the 20 m band


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("stac")
    files = make_scene("landcover", root / "scene", width=480, height=360, block=128)
    return make_band_files(files.image, root / "S2"), root


def test_stac_item_resolves_assets_by_key_and_common_name(product):
    prod, _ = product
    scene = open_scene([{"stac": str(prod.item), "assets": ["B02", "green", "red", "nir08"]}])
    assert scene.band_names == ("B02:blue", "B03:green", "B04:red", "B8A:nir08")
    assert [layer.sources[0].path for layer in scene.layers] == [
        str(prod.bands[k].resolve()) for k in ("B02", "B03", "B04", "B8A")]
    assert scene.resolution == 10.0


def test_files_and_stac_item_give_identical_labels_and_clouds_are_nodata(product, dask_client):
    prod, root = product
    drop = {"drop_values": list(SCL_DROP)}
    base = {"chunk_size": 128, "vectorize": {"enabled": False},
            "method": {"kind": "kmeans", "n_clusters": 5, "sample_size": 5000}}
    files_job = {**base, "name": "files", "output": str(root / "files"),
                 "inputs": [str(prod.bands[k]) for k in ("B02", "B03", "B04", "B8A")],
                 "masks": [{"path": str(prod.scl), **drop}]}
    stac_job = {**base, "name": "stac", "output": str(root / "stac"),
                "inputs": [{"stac": str(prod.item), "assets": ASSETS}],
                "masks": [{"stac": str(prod.item), "asset": "SCL", **drop}]}
    for job in (files_job, stac_job):
        run_job(parse_job(job), client=dask_client, show_progress=False)
    with rasterio.open(root / "files" / "labels.zarr") as a, rasterio.open(root / "stac" / "labels.zarr") as b:
        from_files, from_stac = a.read(1), b.read(1)
    assert from_files.tobytes() == from_stac.tobytes()
    with rasterio.open(prod.scl) as ds:  # 20 m classes onto the 10 m grid: each covers 2 x 2 pixels
        scl = np.repeat(np.repeat(ds.read(1), 2, axis=0), 2, axis=1)
    with rasterio.open(prod.bands["B02"]) as ds:
        image_valid = ds.read_masks(1) != 0
    cloudy = np.isin(scl, SCL_DROP)
    assert 0.05 < cloudy.mean() < 0.6
    assert (from_stac[cloudy] == 255).all()
    clear = ~cloudy & image_valid
    assert (from_stac[clear] != 255).mean() > 0.99  # the 20 m band's edge pixels may be missing
    assert json.loads((root / "stac" / "model.json").read_text())


def test_qa_bit_flags_drop_pixels(tmp_path):
    from tests.fixtures import write_raster

    img = write_raster(tmp_path / "img.tif", np.full((2, 40, 50), 7, np.uint16))
    qa = np.zeros((40, 50), np.uint16)
    qa[:10] = 1 << 3  # cloud bit
    qa[10:20] = 1 << 4  # shadow bit
    qa[20:30] = 1 << 1  # a bit the rule keeps
    write_raster(tmp_path / "qa.tif", qa)
    scene = open_scene([str(img)], masks=[{"path": str(tmp_path / "qa.tif"), "drop_bits": [3, 4]}])
    assert scene.count == 2
    _, valid = read_window(scene, Window(0, 0, 40, 50))
    np.testing.assert_array_equal(valid, (qa & 0b11000) == 0)


def test_bad_stac_and_qa_inputs_are_refused(product, tmp_path):
    prod, _ = product
    with pytest.raises(InputError, match="no asset 'swir16'"):
        open_scene([{"stac": str(prod.item), "assets": ["swir16"]}])
    with pytest.raises(InputError, match=r"beyond its uint8 type"):
        open_scene([str(prod.bands["B02"])], masks=[{"path": str(prod.scl), "drop_bits": [9]}])
    (tmp_path / "x.json").write_text('{"type": "Catalog"}')
    with pytest.raises(InputError, match="not a STAC Item"):
        open_scene([{"stac": str(tmp_path / "x.json")}])
