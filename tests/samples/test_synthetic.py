"""Tests of the seeded synthetic-scene generator (small scenes, so they stay fast)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geoseg.errors import InputError
from geoseg.legend import CROPWEED_CLASSES, LANDCOVER_CLASSES
from geoseg.samples import synthetic
from geoseg.samples.synthetic import SceneFiles, make_scene

W, H, BLOCK = 300, 260, 128


@pytest.fixture(scope="module")
def landcover(tmp_path_factory: pytest.TempPathFactory) -> SceneFiles:
    return make_scene("landcover", tmp_path_factory.mktemp("lc"), W, H, seed=7, block=BLOCK)


@pytest.fixture(scope="module")
def cropweed(tmp_path_factory: pytest.TempPathFactory) -> SceneFiles:
    return make_scene("cropweed", tmp_path_factory.mktemp("cw"), W, H, seed=7, block=BLOCK)


def _read(files: SceneFiles) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(files.image) as img, rasterio.open(files.reference) as ref:
        return img.read(), ref.read(1)


# ---- files and determinism ---------------------------------------------------------------------


def test_files_are_named_by_kind_and_out_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    files = make_scene("cropweed", out, 40, 30, seed=1, block=16)
    assert files.image == out / "cropweed_image.tif"
    assert files.reference == out / "cropweed_reference.tif"
    assert files.regions == out / "cropweed_regions.gpkg"
    assert files.kind == "cropweed" and files.legend == CROPWEED_CLASSES
    # Only the three finished files remain: no temporary names left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["cropweed_image.tif", "cropweed_reference.tif", "cropweed_regions.gpkg"]
    )


def test_same_seed_gives_byte_identical_files(tmp_path: Path, landcover: SceneFiles) -> None:
    again = make_scene("landcover", tmp_path, W, H, seed=7, block=BLOCK)
    for a, b in ((landcover.image, again.image), (landcover.reference, again.reference),
                 (landcover.regions, again.regions)):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_other_seed_gives_other_scene(tmp_path: Path, landcover: SceneFiles) -> None:
    other = make_scene("landcover", tmp_path, W, H, seed=8, block=BLOCK)
    img_a, ref_a = _read(landcover)
    img_b, ref_b = _read(other)
    assert np.mean(ref_a != ref_b) > 0.2
    assert not np.array_equal(img_a, img_b)


@pytest.mark.parametrize("kind", ["landcover", "cropweed"])
def test_pixels_do_not_depend_on_block_size(tmp_path: Path, kind: str) -> None:
    small = make_scene(kind, tmp_path / "b64", W, H, seed=3, block=64)
    large = make_scene(kind, tmp_path / "b512", W, H, seed=3, block=512)
    img_s, ref_s = _read(small)
    img_l, ref_l = _read(large)
    np.testing.assert_array_equal(img_s, img_l)
    np.testing.assert_array_equal(ref_s, ref_l)
    with rasterio.open(large.image) as ds:
        assert ds.block_shapes[0] == (512, 512)


def test_a_failed_run_leaves_no_file_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = synthetic._Landcover._pixels

    def failing(self, ry, rx):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk on fire")
        return original(self, ry, rx)

    monkeypatch.setattr(synthetic._Landcover, "_pixels", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        make_scene("landcover", tmp_path, 200, 200, block=64)
    assert calls["n"] == 4
    assert list(tmp_path.iterdir()) == []


# ---- georeferencing ---------------------------------------------------------------------------


def test_landcover_georeferencing(landcover: SceneFiles) -> None:
    with rasterio.open(landcover.image) as img, rasterio.open(landcover.reference) as ref:
        assert img.crs.to_epsg() == 32633
        assert tuple(img.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0)
        assert (img.width, img.height, img.count) == (W, H, 4)
        assert img.dtypes == ("uint16",) * 4
        assert img.descriptions == ("blue", "green", "red", "nir")
        assert img.nodata == 0
        assert img.profile["tiled"] and img.block_shapes == [(BLOCK, BLOCK)] * 4
        assert img.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] in ("DEFLATE", "ZSTD")
        assert img.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        # The reference lies on exactly the same grid.
        assert ref.crs == img.crs and ref.transform == img.transform
        assert (ref.width, ref.height, ref.count) == (W, H, 1)
        assert ref.dtypes == ("uint8",) and ref.nodata == 0
        assert ref.profile["tiled"] and ref.block_shapes == [(BLOCK, BLOCK)]
        assert ref.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] in ("DEFLATE", "ZSTD")
        assert ref.colormap(1)[2][:3] == LANDCOVER_CLASSES[1].rgb()


def test_cropweed_georeferencing(cropweed: SceneFiles) -> None:
    with rasterio.open(cropweed.image) as img, rasterio.open(cropweed.reference) as ref:
        assert img.crs.to_epsg() == 32632
        assert img.res == pytest.approx((0.01, 0.01))
        assert img.transform.c == pytest.approx(400000.0) and img.transform.f == pytest.approx(5000000.0)
        assert img.dtypes == ("uint8",) * 4
        assert img.descriptions == ("red", "green", "blue", "nir")
        assert img.profile["tiled"] and img.block_shapes[0] == (BLOCK, BLOCK)
        assert img.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert ref.crs == img.crs and ref.transform == img.transform and ref.shape == img.shape
        assert ref.dtypes == ("uint8",) and ref.nodata == 0


# ---- land-cover content -------------------------------------------------------------------------


def test_landcover_classes_and_nodata(landcover: SceneFiles) -> None:
    img, ref = _read(landcover)
    share = np.bincount(ref.ravel(), minlength=7) / ref.size
    assert set(np.unique(ref)) == {0, 1, 2, 3, 4, 5, 6}
    expected = {  # class id: (min, max) share of the scene
        0: (0.02, 0.05),  # nodata wedge
        1: (0.25, 0.45),  # cropland
        2: (0.15, 0.35),  # forest
        3: (0.03, 0.12),  # water
        4: (0.10, 0.35),  # grassland
        5: (0.02, 0.10),  # built-up
        6: (0.02, 0.08),  # bare
    }
    for cls, (lo, hi) in expected.items():
        assert lo <= share[cls] <= hi, (cls, share[cls])
    nodata = ref == 0
    assert np.all(img[:, nodata] == 0)
    assert np.all(img[:, ~nodata] > 0)  # a valid pixel never looks like nodata
    assert img.max() <= 10000


def test_landcover_spectra_are_plausible_but_not_trivial(landcover: SceneFiles) -> None:
    img, ref = _read(landcover)
    blue, green, red, nir = img.astype(np.float64)
    ndvi = (nir - red) / (nir + red + 1e-9)
    mean_ndvi = {c.name: ndvi[ref == c.id].mean() for c in LANDCOVER_CLASSES}
    mean_nir = {c.name: nir[ref == c.id].mean() for c in LANDCOVER_CLASSES}
    assert mean_ndvi["forest"] > 0.65
    assert mean_ndvi["built-up"] < 0.35 and mean_ndvi["bare"] < 0.35
    assert mean_nir["water"] < 0.5 * min(v for k, v in mean_nir.items() if k != "water")
    assert mean_ndvi["water"] < mean_ndvi["built-up"] < mean_ndvi["grassland"]
    # Within-class variation and sensor noise: no class is a flat colour.
    for c in LANDCOVER_CLASSES:
        assert nir[ref == c.id].std() > 80, c.name


def test_landcover_regions(landcover: SceneFiles) -> None:
    info = pyogrio.read_info(landcover.regions, layer="regions")
    assert info["crs"] == "EPSG:32633"
    assert list(info["fields"]) == ["region_id", "name"]
    assert info["dtypes"][0].startswith("int") and info["dtypes"][1] == "object"
    df = pyogrio.read_dataframe(landcover.regions, layer="regions")
    assert sorted(df["region_id"]) == list(range(1, len(df) + 1))
    assert df["name"].is_unique and all(isinstance(n, str) and n for n in df["name"])
    _assert_tiles_extent(df.geometry.values, landcover.image)


def test_landcover_region_count_scales_with_area() -> None:
    polys, ids, _ = synthetic._Landcover(2048, 2048, 0).regions()
    assert 10 <= len(ids) <= 30
    assert all(p.geom_type == "Polygon" and p.is_valid for p in polys)


def _assert_tiles_extent(geoms: np.ndarray, image: Path) -> None:
    """Valid polygons, without overlaps, that exactly cover the raster's extent."""
    with rasterio.open(image) as ds:
        box = shapely.box(*ds.bounds)
    assert all(g.geom_type == "Polygon" and g.is_valid and not g.is_empty for g in geoms)
    union = shapely.union_all(geoms)
    assert union.symmetric_difference(box).area < 1e-6 * box.area
    assert sum(g.area for g in geoms) == pytest.approx(box.area, rel=1e-9)


# ---- crop / weed content ------------------------------------------------------------------------


def _row_distance(files: SceneFiles) -> tuple[np.ndarray, float]:
    """Distance (px) of every pixel centre from the nearest crop-row centre line, and the row period."""
    with rasterio.open(files.image) as ds:
        tags = ds.tags()
        h, w = ds.shape
    angle = np.radians(float(tags["GEOSEG_ROW_ANGLE_DEG"]))
    period = float(tags["GEOSEG_ROW_PERIOD_PX"])
    offset = float(tags["GEOSEG_ROW_OFFSET_PX"])
    y, x = np.mgrid[0:h, 0:w] + 0.5
    v = y * np.cos(angle) - x * np.sin(angle)
    phase = (v - offset) / period
    return np.abs(phase - np.round(phase)) * period, period


def test_cropweed_classes(cropweed: SceneFiles) -> None:
    _, ref = _read(cropweed)
    share = np.bincount(ref.ravel(), minlength=4) / ref.size
    assert share[0] == 0  # no nodata in the drone scene
    assert 0.5 < share[1] < 0.85  # soil
    assert 0.12 < share[2] < 0.4  # crop
    assert 0.015 < share[3] < 0.12  # weed


def test_crop_lies_on_rows_and_weeds_mostly_between_them(cropweed: SceneFiles) -> None:
    _, ref = _read(cropweed)
    dist, period = _row_distance(cropweed)
    assert 50 <= period <= 75
    crop, weed = ref == 2, ref == 3
    assert np.mean(dist[crop] < 0.25 * period) > 0.9
    assert np.mean(dist[weed] > 0.25 * period) > 0.7
    # Crop pixels are spread along every row: rows are long, not a few blobs.
    assert np.mean(crop[dist < 3]) > 0.4


def test_crop_and_weed_spectra_overlap(cropweed: SceneFiles) -> None:
    img, ref = _read(cropweed)
    bands = img.reshape(4, -1).astype(np.float64)
    crop, weed, soil = (ref.ravel() == c for c in (2, 3, 1))
    for b in range(4):
        gap = abs(bands[b, crop].mean() - bands[b, weed].mean())
        spread = min(bands[b, crop].std(), bands[b, weed].std())
        assert gap < spread, b  # per-pixel spectra alone cannot separate crop from weed
    red, nir = bands[0], bands[3]
    ndvi = (nir - red) / (nir + red)
    assert ndvi[crop].mean() > ndvi[soil].mean() + 0.3  # vegetation vs soil is easy


def test_cropweed_regions_are_plots(cropweed: SceneFiles) -> None:
    info = pyogrio.read_info(cropweed.regions, layer="regions")
    assert info["crs"] == "EPSG:32632"
    df = pyogrio.read_dataframe(cropweed.regions, layer="regions")
    assert 4 <= len(df) <= 20
    assert sorted(df["region_id"]) == list(range(1, len(df) + 1))
    assert all(g.equals(g.envelope) for g in df.geometry.values)  # rectangular strips
    _assert_tiles_extent(df.geometry.values, cropweed.image)


# ---- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=0), "width"),
        (dict(width=20_001), "width"),
        (dict(height=-5), "height"),
        (dict(height=30_000), "height"),
        (dict(width=10.5), "width"),
        (dict(kind="forest"), "kind"),
        (dict(block=100), "block"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = dict(kind="landcover", out_dir=tmp_path / "out", width=64, height=64, seed=0, block=64) | kwargs
    with pytest.raises(InputError, match=match):
        make_scene(**args)
    assert not (tmp_path / "out").exists()


def test_one_pixel_scene(tmp_path: Path) -> None:
    files = make_scene("landcover", tmp_path, 1, 1, block=16)
    img, ref = _read(files)
    assert img.shape == (4, 1, 1) and ref.shape == (1, 1) and ref[0, 0] in range(1, 7)


# ---- memory -------------------------------------------------------------------------------------


def test_memory_does_not_scale_with_scene(tmp_path: Path) -> None:
    make_scene("landcover", tmp_path / "warm", 64, 64, block=16)  # imports and caches outside the trace
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        make_scene("landcover", tmp_path / "big", 1500, 1500, seed=1, block=256)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    full_scene = 1500 * 1500 * 4 * np.dtype(np.uint16).itemsize  # 18 MB
    assert peak < 0.4 * full_scene, f"peak {peak / 1e6:.1f} MB"
