"""The job's grid: the default rule, grid: requests, inputs in other CRSs and resolutions warped onto it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

from geoseg.errors import InputError
from geoseg.geo import GeoGrid, Window
from geoseg.io.scene import open_scene, read_window
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.products import make_band_files, make_utm_split
from geoseg.samples.synthetic import make_scene


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    files = make_scene("landcover", root / "scene", width=480, height=360, block=128)
    return files.image, root


def test_default_grid_is_first_crs_finest_resolution_union_footprint(scene_files):
    image, root = scene_files
    west, east = make_utm_split(image, root / "utm")
    scene = open_scene([{"path": [str(west), str(east)], "kind": "mosaic"}])
    with rasterio.open(image) as ds, rasterio.open(west) as w:
        assert scene.grid.crs == w.crs and scene.grid.resolution == 10.0
        t = scene.grid.transform
        # snapped to the first input's pixel corner, and covering the uncut scene
        assert ((t.c - w.transform.c) / 10) % 1 == 0 and ((t.f - w.transform.f) / 10) % 1 == 0
        left, b, r, top = scene.grid.bounds
        assert left <= ds.bounds.left and b <= ds.bounds.bottom and r >= ds.bounds.right and top >= ds.bounds.top
    assert scene.layers[0].sources[0].offset is not None  # the first input lies on the grid: direct reads
    assert scene.layers[0].sources[1].offset is None  # the other zone: warped per window


@pytest.mark.parametrize("resampling, bar", [("nearest", 0.99), ("bilinear", 0.95)])
def test_utm_split_agrees_with_the_single_file_run(scene_files, dask_client, resampling, bar):
    """On the first zone's grid, labels agree with the single-file run (same k-means model).

    Nearest there and back keeps pixel values (>= 99 %); bilinear both ways smooths the per-pixel
    noise of the generated scene, which moves noisy k-means labels (~96.5 % here).
    """
    image, root = scene_files
    root = root / resampling
    west, east = make_utm_split(image, root / "utm2", resampling=resampling)
    base = {"chunk_size": 128, "vectorize": {"enabled": False}}
    run_job(parse_job({**base, "name": "one", "inputs": [str(image)], "output": str(root / "one"),
                       "method": {"kind": "kmeans", "n_clusters": 5, "sample_size": 5000}}),
            client=dask_client, show_progress=False)
    run_job(parse_job({**base, "name": "two", "inputs": [{"path": [str(west), str(east)], "resampling": resampling}],
                       "grid": {"like": str(image)}, "output": str(root / "two"),
                       "method": {"kind": "kmeans", "n_clusters": 5, "model": str(root / "one" / "model.json")}}),
            client=dask_client, show_progress=False)
    with rasterio.open(root / "one" / "labels.zarr") as a, rasterio.open(root / "two" / "labels.zarr") as b:
        one, two = a.read(1), b.read(1)
    both = (one != 255) & (two != 255)
    agree = float((one[both] == two[both]).mean())
    half = np.zeros_like(both)
    half[:, one.shape[1] // 2 + 16:] = True
    agree_warped = float((one[both & half] == two[both & half]).mean())
    print(f"UTM split ({resampling}) agreement: {agree:.4f} of valid pixels ({agree_warped:.4f} on the warped half); "
          f"valid in both {both.mean():.4f}")
    assert both.sum() >= 0.97 * (one != 255).sum()
    assert agree >= bar


def test_band_file_at_20m_is_warped_like_gdal(scene_files):
    image, root = scene_files
    product = make_band_files(image, root / "bands")
    scene = open_scene([str(product.bands["B04"]), str(product.bands["B8A"])])
    with rasterio.open(product.bands["B04"]) as ds:
        assert scene.grid.same_as(GeoGrid.of_dataset(ds))  # the finest resolution
    values, valid = read_window(scene, Window(0, 0, scene.height, scene.width))
    with rasterio.open(product.bands["B8A"]) as src, WarpedVRT(
        src, crs=src.crs, transform=scene.grid.transform, width=scene.width, height=scene.height,
        resampling=Resampling.bilinear, src_nodata=0, nodata=0,
    ) as vrt:
        oracle = vrt.read(1).astype(np.float32)
    inner = valid & (oracle != 0)
    assert inner.mean() > 0.9
    np.testing.assert_allclose(values[1][inner], oracle[inner], rtol=0, atol=1.0)


@pytest.mark.parametrize(
    "grid, message",
    [({"bounds": [0, 0, 1000, 1000]}, "meets no input"),
     ({"crs": "EPSG:999999"}, "not a coordinate reference system"),
     ({"resolution": 0.0001}, "beyond"),],
)
def test_bad_grids_are_refused(scene_files, grid, message):
    image, _ = scene_files
    with pytest.raises(InputError, match=message):
        open_scene([str(image)], grid=grid)


def test_grid_request_in_another_crs_and_resolution(scene_files):
    image, _ = scene_files
    scene = open_scene([str(image)], grid={"crs": "EPSG:3035", "resolution": 20})
    assert scene.grid.crs.to_epsg() == 3035 and scene.grid.resolution == 20
    values, valid = read_window(scene, Window(0, 0, scene.height, scene.width))
    assert 0.6 < valid.mean() < 1.0  # the rotated footprint inside its bounding grid
    oracle = np.zeros(scene.grid.shape, np.float32)
    with rasterio.open(image) as src:  # GDAL's warp of the whole file (WarpedVRT does not widen the
        reproject(rasterio.band(src, 1), oracle, dst_transform=scene.grid.transform,  # kernel when downsampling)
                  dst_crs=scene.grid.crs, resampling=Resampling.bilinear, dst_nodata=0)
    inner = valid & (oracle != 0)
    assert inner.mean() > 0.6
    np.testing.assert_allclose(values[0][inner], oracle[inner], atol=0.01)


@pytest.mark.parametrize("grid", [{"crs": "EPSG:3035", "resolution": 60}, {"crs": "EPSG:32634", "resolution": 10}])
def test_chunked_warped_reads_equal_one_read_of_the_whole_grid(scene_files, grid):
    """Chunk borders do not show in warped inputs: each window reads the source pixels its kernel needs."""
    image, _ = scene_files
    scene = open_scene([str(image)], grid=grid)
    whole, whole_ok = read_window(scene, Window(0, 0, scene.height, scene.width))
    for w in scene.chunk_grid(64).windows():
        part, ok = read_window(scene, w)
        np.testing.assert_array_equal(ok, whole_ok[w.slices])
        np.testing.assert_allclose(part[:, ok], whole[(slice(None), *w.slices)][:, ok], atol=1e-3)


def test_invalid_source_pixels_never_leak_into_warped_values(tmp_path):
    """Bilinear next to masked pixels weighs only valid neighbours (values stay in the valid range)."""
    from rasterio.transform import from_origin

    from tests.fixtures import write_raster

    data = np.full((1, 200, 200), 1000, np.uint16)
    data[0, 50:150:2, 50:150:3] = 65535  # nodata specks carrying an extreme value
    path = write_raster(tmp_path / "specks.tif", data, nodata=65535, transform=from_origin(500000, 5100000, 10, 10))
    for grid in ({"crs": "EPSG:32634", "resolution": 10}, {"resolution": 7}):
        scene = open_scene([str(path)], grid=grid)
        values, valid = read_window(scene, Window(0, 0, scene.height, scene.width))
        assert valid.sum() > 0.5 * 200 * 200 * (100 / scene.grid.resolution) ** 2 / 100
        assert values[0][valid].max() == pytest.approx(1000, abs=1e-3)


def test_default_grid_of_cm_tiles_far_from_the_origin_has_no_extra_pixel(tmp_path):
    """1 cm pixels at x = 400 km: the union of two tiles is exactly their pixels (no float round-up)."""
    from rasterio.transform import from_origin

    from tests.fixtures import write_raster

    write_raster(tmp_path / "a.tif", np.ones((1, 384, 200), np.uint8), transform=from_origin(400000, 5000000, 0.01, 0.01))
    write_raster(tmp_path / "b.tif", np.ones((1, 384, 184), np.uint8),
                 transform=from_origin(400000 + 200 * 0.01, 5000000, 0.01, 0.01))
    scene = open_scene(str(tmp_path / "*.tif"))
    assert scene.grid.shape == (384, 384)
    assert all(s.offset is not None for s in scene.layers[0].sources)
