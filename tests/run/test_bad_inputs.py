"""Bad inputs given to a whole job: one clear GeosegError, a failed run record, no output that looks done."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import GeosegError, NoOverlapError
from geoseg.io.scene import MAX_SIDE
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene, write_raster


def _job(tmp_path: Path, image: Path, **extra) -> dict:
    return {"name": "bad", "inputs": [str(image)], "output": str(tmp_path / "out"), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 1000}, **extra}


def _assert_nothing_looks_done(out: Path) -> None:
    assert not (out / "labels.zarr").exists()
    assert not (out / "polygons.gpkg").exists()
    assert not (out / "metrics.csv").exists()
    if (out / "run.json").exists():
        assert json.loads((out / "run.json").read_text())["outcome"] == "failed"


def _sparse(path: Path, width: int, height: int) -> Path:
    """A valid GeoTIFF header claiming a huge size, with no tiles written (a few kB on disk)."""
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5100000, 10, 10), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True, nodata=0):
        pass
    return path


def _one_pixel(path: Path) -> Path:
    return write_raster(path, np.full((4, 1, 1), 900, np.uint16))


def _all_nodata(path: Path) -> Path:
    return write_raster(path, np.zeros((4, 200, 200), np.uint16), nodata=0)


def _all_nan(path: Path) -> Path:
    return write_raster(path, np.full((4, 200, 200), np.nan, np.float32))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _sparse(p / "huge.tif", MAX_SIDE + 1, 1000), "beyond geoseg's limit"),
        (lambda p: _one_pixel(p / "one.tif"), "pixel"),
        (lambda p: _all_nodata(p / "empty.tif"), "no valid pixels"),
        (lambda p: _all_nan(p / "nan.tif"), "no valid pixels"),
    ],
)
def test_bad_images_fail_cleanly(tmp_path, dask_client, make, message):
    image = make(tmp_path)
    with pytest.raises(GeosegError, match=message):
        run_job(parse_job(_job(tmp_path, image)), client=dask_client, show_progress=False)
    _assert_nothing_looks_done(tmp_path / "out")


def test_reference_that_does_not_overlap_is_refused_before_any_work(tmp_path, dask_client):
    image, classes = blocky_scene(tmp_path)
    far = write_raster(tmp_path / "far.tif", classes[None], nodata=0, transform=from_origin(900000, 5100000, 10, 10))
    with pytest.raises(NoOverlapError):
        run_job(parse_job(_job(tmp_path, image, reference={"path": str(far)})), client=dask_client,
                show_progress=False)
    _assert_nothing_looks_done(tmp_path / "out")


def test_regions_missing_their_field_are_refused_before_any_work(tmp_path, dask_client):
    import geopandas as gpd
    from shapely.geometry import box

    image, classes = blocky_scene(tmp_path)
    ref = write_raster(tmp_path / "ref.tif", (classes + 1)[None].astype(np.uint8), nodata=0)
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(500000, 5097000, 503400, 5100000)], crs=32633).to_file(
        tmp_path / "regions.gpkg")
    job = _job(tmp_path, image, reference={"path": str(ref)},
               regions={"path": str(tmp_path / "regions.gpkg"), "field": "parcel"})
    with pytest.raises(GeosegError, match="parcel"):
        run_job(parse_job(job), client=dask_client, show_progress=False)
    _assert_nothing_looks_done(tmp_path / "out")


def _damaged_tiles(folder: Path) -> Path:
    """A GeoTIFF whose header is intact but whose compressed tiles are damaged (found only when read)."""
    path, _ = blocky_scene(folder, height=256, width=256)
    data = bytearray(path.read_bytes())
    start = len(data) // 3  # inside the tile data (the IFD is at the end)
    data[start:start + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_local_tile_is_not_retried_and_the_error_says_what_failed(tmp_path, caplog):
    import logging
    import time

    from geoseg.errors import InputError
    from geoseg.io.scene import open_scene, read_window

    scene = open_scene(str(_damaged_tiles(tmp_path)))
    caplog.set_level(logging.WARNING, logger="geoseg")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"cannot read r\d+_c\d+_h128_w128 of .*TIFFReadEncodedTile"):
        for window in scene.chunk_grid(128).windows():
            read_window(scene, window)
    assert time.perf_counter() - t0 < 1.0  # three retries took 3.5 s
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
