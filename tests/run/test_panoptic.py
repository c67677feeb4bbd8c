"""panoptic.zarr from labels and any method's instance ids: pixels that disagree with the labels are cleared,
both rasters read back through GDAL with the labels' georeferencing, the manifest covers both."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.geo import GeoGrid
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.io.manifest import verify_store
from geoseg.legend import ClassInfo
from geoseg.run.panoptic import assemble_panoptic

GRID = GeoGrid.of(70, 90, Affine(0.5, 0, 600000, 0, -0.5, 5200000), CRS.from_epsg(32633)).tiles(32)
LEGEND = (ClassInfo(1, "ground", "#a88a5c"), ClassInfo(2, "tree", "#1f7a1f"), ClassInfo(3, "roof", "#d73027"))


def _store(path, data, dtype="uint8", fill=255, array="labels", legend=LEGEND):
    w = LabelStoreWriter.create(path, GRID, legend, dtype=dtype, fill_value=fill, array=array)
    for win in GRID.windows():
        w.write(win, data[win.slices])
    return w.finalize()


def test_instance_pixels_off_their_class_are_cleared(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.choice([1, 2, 3], size=GRID.shape).astype(np.uint8)
    labels[:5, :5] = 255  # nodata
    ids = np.zeros(GRID.shape, np.uint32)
    ids[10:40, 20:70] = 1  # crosses chunk seams; class 2 but covers pixels of every class
    ids[50:60, 0:10] = 3  # class 3
    ids[0:8, 0:8] = 4  # class 2, partly on nodata
    classes = np.array([2, 1, 3, 2])  # id 2 has no pixel at all
    _store(tmp_path / "labels.zarr", labels)
    _store(tmp_path / "work.zarr", ids, "uint32", 0, "instances", ())
    path, table = assemble_panoptic(tmp_path / "labels.zarr", tmp_path / "work.zarr", classes, tmp_path / "panoptic.zarr")
    want = np.where((ids > 0) & (labels == np.concatenate([[0], classes])[ids]), ids, 0)
    with rasterio.open(f'ZARR:"{path}":/instances') as ds:
        got = ds.read(1)
        assert ds.crs == GRID.crs and ds.transform.almost_equals(GRID.transform)
    with rasterio.open(f'ZARR:"{path}":/semantic') as ds:
        np.testing.assert_array_equal(ds.read(1), labels)
    np.testing.assert_array_equal(got, want)
    assert table.size.tolist() == [int((want == k).sum()) for k in (1, 2, 3, 4)]
    assert table.cleared == int(((ids > 0) & (want == 0)).sum()) > 0
    for k in (1, 3, 4):  # the first pixel (row-major) of each id
        r, c = np.argwhere(want == k)[0]
        assert table.first[k - 1] == r * GRID.width + c
    assert table.first[1] == -1
    assert verify_store(path) == []
    import json

    manifest = json.loads((path / "geoseg-manifest.json").read_text())
    assert set(manifest["arrays"]) == {"semantic", "instances"} and manifest["arrays"]["instances"]["chunks"]
