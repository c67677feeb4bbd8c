"""Units: STAC ``raster:bands`` and GeoTIFF scale/offset applied per band, in float32, before features and
indices; ``apply_scale: false``; no work at all for files stored in their own units."""

from __future__ import annotations

import json

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
