"""Mosaics: tiles with overlaps and alpha margins composed onto one grid, first valid tile wins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.errors import BandError
from geoseg.geo import GeoGrid, Window
from geoseg.io.scene import open_scene, read_window
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.products import make_tiles
from geoseg.samples.synthetic import make_scene
from tests.fixtures import write_raster


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaic")
    files = make_scene("landcover", root / "scene", width=480, height=360, block=128)
    tiles = make_tiles(files.image, root / "tiles", n=2, overlap=64, margin=8)
    return files.image, tiles, root


def _tile_coverage(image, tiles):
    """Oracle from the files themselves: where some tile has alpha > 0, and the first such tile's values."""
    with rasterio.open(image) as ds:
        grid = GeoGrid.of_dataset(ds)
        values = np.zeros((ds.count, ds.height, ds.width), np.float32)
    covered = np.zeros(grid.shape, bool)
    for t in sorted(tiles):
        with rasterio.open(t) as ds:
            col, row = (int(round(v)) for v in ~grid.transform * (ds.transform.c, ds.transform.f))
            data = ds.read()
            sl = (slice(row, row + ds.height), slice(col, col + ds.width))
            take = (data[-1] > 0) & ~covered[sl]
            values[(slice(None), *sl)][:, take] = data[:-1][:, take]
            covered[sl] |= data[-1] > 0
    return covered, values


def test_tiles_as_one_glob_are_the_uncut_scene(tiled):
    image, tiles, root = tiled
    scene = open_scene(str(root / "tiles" / "tile_*.tif"))
    with rasterio.open(image) as ds:
        assert scene.grid.same_as(GeoGrid.of_dataset(ds))
        assert scene.band_names == ds.descriptions
        full = ds.read().astype(np.float32)
        image_valid = ds.read_masks(1) != 0
    assert len(scene.layers) == 1 and len(scene.layers[0].sources) == 4
    covered, first_values = _tile_coverage(image, tiles)
    assert 0 < (~covered).sum() < covered.size // 10  # the outer margins
    values, valid = read_window(scene, Window(0, 0, scene.height, scene.width))
    np.testing.assert_array_equal(valid, covered & image_valid)
    np.testing.assert_array_equal(values[:, valid], full[:, valid])
    np.testing.assert_array_equal(values[:, valid], first_values[:, valid])
    # chunk windows give the same pixels as the whole-scene read, whichever tiles they touch
    for w in scene.chunk_grid(128).windows():
        part = scene.for_window(w)
        assert len(part.layers[0].sources) <= 4
        v, ok = read_window(part, w)
        np.testing.assert_array_equal(ok, valid[w.slices])
        np.testing.assert_array_equal(v[:, ok], values[(slice(None), *w.slices)][:, ok])


def test_task_gets_only_the_tiles_meeting_its_window(tiled):
    _, _, root = tiled
    scene = open_scene(str(root / "tiles" / "tile_*.tif"))
    corner = scene.for_window(Window(0, 0, 64, 64))
    assert [s.path.rsplit("/", 1)[-1] for s in corner.layers[0].sources] == ["tile_0_0.tif"]
    middle = scene.for_window(Window(170, 230, 20, 20))  # inside every overlap
    assert len(middle.layers[0].sources) == 4


def test_mosaic_labels_are_byte_identical_to_the_uncut_scene(tiled, dask_client):
    image, tiles, root = tiled
    base = {"chunk_size": 128, "vectorize": {"enabled": False}}
    run_job(parse_job({**base, "name": "uncut", "inputs": [str(image)], "output": str(root / "uncut"),
                       "method": {"kind": "kmeans", "n_clusters": 5, "sample_size": 5000}}),
            client=dask_client, show_progress=False)
    model = root / "uncut" / "model.json"
    run_job(parse_job({**base, "name": "tiles", "inputs": [str(root / "tiles" / "tile_*.tif")],
                       "output": str(root / "tiled"),
                       "method": {"kind": "kmeans", "n_clusters": 5, "model": str(model)}}),
            client=dask_client, show_progress=False)
    with rasterio.open(root / "uncut" / "labels.zarr") as a, rasterio.open(root / "tiled" / "labels.zarr") as b:
        uncut, mosaic = a.read(1), b.read(1)
        assert a.transform == b.transform and a.crs == b.crs
    covered, _ = _tile_coverage(image, tiles)
    assert (mosaic[~covered] == 255).all()
    assert mosaic[covered].tobytes() == uncut[covered].tobytes()
    assert json.loads(model.read_text())


def test_tiles_with_different_band_counts_are_refused(tmp_path):
    write_raster(tmp_path / "a.tif", np.ones((3, 20, 20), np.uint8))
    from rasterio.transform import from_origin

    write_raster(tmp_path / "b.tif", np.ones((2, 20, 20), np.uint8), transform=from_origin(500200, 5100000, 10, 10))
    with pytest.raises(BandError):
        open_scene(str(tmp_path / "*.tif"))


def test_explicit_kinds_mosaic_and_bands(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.full((1, 20, 20), 1, np.uint8))
    b = write_raster(tmp_path / "b.tif", np.full((1, 20, 20), 2, np.uint8))
    stacked = open_scene([{"path": str(tmp_path / "*.tif")}])
    assert stacked.band_names == ("a:b1", "b:b1")  # one grid: bands stack (today's meaning)
    mosaic = open_scene([{"path": [str(a), str(b)], "kind": "mosaic"}])
    values, valid = read_window(mosaic, Window(0, 0, 20, 20))
    assert mosaic.count == 1 and valid.all() and (values == 1).all()  # first file wins everywhere


def test_lazy_xarray_view_of_a_mosaic_matches_read_window(tiled):
    from geoseg.io.scene import open_scene_xarray

    _, _, root = tiled
    scene = open_scene(str(root / "tiles" / "tile_*.tif"))
    da = open_scene_xarray(scene, chunk=128)
    assert da.rio.crs == scene.grid.crs and da.rio.transform() == scene.grid.transform
    assert da.shape == (4, 360, 480) and list(da.band.values) == list(scene.band_names)
    values, valid = read_window(scene, Window(100, 150, 90, 120))
    got = da[:, 100:190, 150:270].values
    np.testing.assert_array_equal(np.isfinite(got[0]), valid)
    np.testing.assert_array_equal(got[:, valid], values[:, valid])


def test_many_tiles_read_ahead_by_threads_compose_as_one_by_one(tmp_path, monkeypatch):
    """36 overlapping tiles with alpha margins: the threaded read-ahead keeps the first valid tile's pixels."""
    from geoseg.io import mosaic

    files = make_scene("landcover", tmp_path / "scene", width=192, height=192, block=64)
    tiles = make_tiles(files.image, tmp_path / "tiles", n=6, overlap=8, margin=2)
    scene = open_scene(str(tmp_path / "tiles" / "tile_*.tif"))
    assert [s.path for s in scene.layers[0].sources] == sorted(map(str, tiles))  # headers read by threads, in order
    window = Window(0, 0, scene.height, scene.width)
    assert len(scene.layers[0].meeting(window)) == 36 >= mosaic.PARALLEL_READS_FROM
    ahead = read_window(scene, window)
    monkeypatch.setattr(mosaic, "PARALLEL_READS_FROM", 10_000)
    one_by_one = read_window(scene, window)
    covered, first_values = _tile_coverage(files.image, tiles)
    with rasterio.open(files.image) as ds:
        covered &= ds.read_masks(1) != 0
    for values, valid in (ahead, one_by_one):
        np.testing.assert_array_equal(valid, covered)
        np.testing.assert_array_equal(values[:, valid], first_values[:, valid])
        assert not values[:, ~valid].any()


def test_a_task_copy_names_only_its_own_files(tiled):
    _, _, root = tiled
    scene = open_scene(str(root / "tiles" / "tile_*.tif"))
    part = scene.for_window(Window(0, 0, 32, 32))
    assert len(scene.paths) == 4 and part.paths == (scene.layers[0].sources[0].path,)
    assert len(part.sizes_bytes) == 1
