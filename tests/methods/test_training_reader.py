"""Training reads its windows with the inputs' reader: the same pixels are valid for training and inference."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.legend import ClassInfo
from geoseg.methods.training import IGNORE_INDEX, TrainConfig, TrainPair, open_sources
from tests.fixtures import write_raster

NODATA = -9999.0
CLASSES = [ClassInfo(1, "a", "#ff0000"), ClassInfo(2, "b", "#00ff00")]


def _two_class_source(tmp_path, img: np.ndarray, ref: np.ndarray, rows: tuple[float, float] = (0.0, 1.0)):
    """A training source over ``img`` (written as a GeoTIFF) with the class ids ``ref`` of :data:`CLASSES`;
    ``rows``: the share of its rows it trains on."""
    from geoseg.methods.training.data import TrainSource, _resolve_class_lut

    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(tmp_path / "img.tif", img, transform=tr)
    write_raster(tmp_path / "ref.tif", ref, transform=tr, nodata=0)
    return TrainSource(TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif"), None,
                       _resolve_class_lut(CLASSES), rows)


def _masked_image(path, size: int = 64) -> np.ndarray:
    """Three float bands + an alpha band + an internal GDAL mask, with nodata and NaN pixels;
    returns the validity every rule together gives (the oracle, from the arrays written)."""
    rng = np.random.default_rng(3)
    data = rng.uniform(1, 100, (3, size, size)).astype(np.float32)
    data[0, 5:9, 5:20] = NODATA  # nodata in one band
    data[2, 30:33, 40:50] = np.nan  # NaN in another
    alpha = np.full((size, size), 255, np.uint8)
    alpha[50:60, 0:12] = 0
    mask = np.full((size, size), 255, np.uint8)
    mask[10:20, 44:60] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="float32",
                           crs="EPSG:32633", transform=from_origin(500000, 5100000, 10, 10), nodata=NODATA,
                           tiled=True, blockxsize=32, blockysize=32) as ds:
            ds.write(data, [1, 2, 3])
            ds.write(alpha.astype(np.float32), 4)
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
            ds.write_mask(mask)
    with rasterio.open(path) as ds:  # the file really holds both masks
        assert ds.colorinterp[3] == ColorInterp.alpha
        assert (ds.read_masks(1) == 0).sum() > 0
    valid = (alpha != 0) & (mask != 0) & np.all(data != NODATA, axis=0) & np.all(np.isfinite(data), axis=0)
    return valid


def test_training_and_inference_agree_on_valid_pixels(tmp_path):
    image = tmp_path / "img.tif"
    expected = _masked_image(image)
    ref = np.ones((64, 64), np.uint8)
    ref[:, 32:] = 2
    write_raster(tmp_path / "ref.tif", ref, transform=from_origin(500000, 5100000, 10, 10), nodata=0)
    cfg = TrainConfig(pairs=[TrainPair(image=image, reference=tmp_path / "ref.tif")], classes=CLASSES,
                      checkpoint=tmp_path / "m", val_fraction=0.0)
    train_src, _ = open_sources(cfg)
    src = train_src[0]
    assert src.band_names == ["b1", "b2", "b3"]  # the alpha band is validity, not a feature (as for inference)

    scene = open_scene(str(image))
    for r, c, h, w in [(0, 0, 64, 64), (3, 17, 29, 40), (40, 0, 24, 33)]:
        img, valid, target = src.read(r, c, h, w)
        data, inferred = read_window(scene, Window(r, c, h, w))
        want = expected[r : r + h, c : c + w]
        assert not want.all() and want.any()
        np.testing.assert_array_equal(valid, inferred)
        np.testing.assert_array_equal(valid, want)
        np.testing.assert_array_equal(img[:, valid], data[:, inferred])
        assert (target[~valid] == IGNORE_INDEX).all()
        assert set(np.unique(target[valid])) <= {0, 1}


def test_reference_nodata_and_mask_are_ignored_in_targets(tmp_path):
    """Reference pixels that are not valid (its nodata, its GDAL mask) are not trained on."""
    tr = from_origin(500000, 5100000, 10, 10)
    img = np.random.default_rng(0).uniform(1, 10, (2, 40, 40)).astype(np.float32)
    write_raster(tmp_path / "img.tif", img, transform=tr)
    ref = np.ones((40, 40), np.uint8)
    ref[:, 20:] = 2
    ref[0:4] = 9  # nodata
    mask = np.full((40, 40), 255, np.uint8)
    mask[30:, 30:] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "ref.tif", "w", driver="GTiff", width=40, height=40, count=1, dtype="uint8",
                           crs="EPSG:32633", transform=tr, nodata=9) as ds:
            ds.write(ref, 1)
            ds.write_mask(mask)
    cfg = TrainConfig(pairs=[TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif")],
                      classes=CLASSES, checkpoint=tmp_path / "m", val_fraction=0.0)
    src = open_sources(cfg)[0][0]
    _, valid, target = src.read(0, 0, 40, 40)
    assert valid.all()
    want = np.where(ref == 1, 0, 1).astype(np.uint8)
    want[0:4] = IGNORE_INDEX
    want[30:, 30:] = IGNORE_INDEX
    np.testing.assert_array_equal(target, want)


def test_a_window_past_the_image_edge_is_the_image_mirrored_as_inference_pads_it(tmp_path):
    """Inference pads a scene's edge tiles with the scene mirrored (``np.pad`` reflect); a training window reaching
    past an edge sees exactly those pixels, and its targets there are ignored."""
    rng = np.random.default_rng(0)
    img = rng.integers(1, 1000, (2, 40, 30)).astype(np.float32)
    ref = rng.integers(1, 3, (40, 30)).astype(np.uint8)
    src = _two_class_source(tmp_path, img, ref)
    mirrored = np.pad(img, ((0, 0), (24, 24), (24, 24)), mode="reflect")
    for row, col in ((-10, -5), (30, 20), (-20, 12), (5, 8), (-24, -24)):
        got, valid, target = src.read_reflected(row, col, 24, 24)
        np.testing.assert_array_equal(got, mirrored[:, row + 24 : row + 48, col + 24 : col + 48])
        rows, cols = np.arange(row, row + 24)[:, None], np.arange(col, col + 24)[None, :]
        inside = (rows >= 0) & (rows < 40) & (cols >= 0) & (cols < 30)
        assert valid.all() and ((target == IGNORE_INDEX) == ~inside).all()
        np.testing.assert_array_equal(target[inside], (ref[np.clip(rows, 0, 39), np.clip(cols, 0, 29)] - 1)[inside])


def test_windows_reach_past_the_images_own_edges_only(tmp_path):
    """With an edge margin (inference's tile stride) windows reach up to it past the image's edges, never past the
    edge of a split's rows inside the image (the scene goes on there: inference would see real pixels)."""
    from geoseg.methods.training.data import WindowSampler

    ref = np.ones((80, 60), np.uint8)
    ref[:, 30:] = 2
    src = _two_class_source(tmp_path, np.ones((1, 80, 60), np.float32), ref, (0.0, 0.75))  # rows 0-60 train
    rng = np.random.default_rng(0)
    for margin in (0, 12):
        picks = np.array([WindowSampler([src], 2, 16, True, edge_margin=margin).pick(rng)[1:] for _ in range(3000)])
        rows, cols = picks[:, 0], picks[:, 1]
        assert rows.min() == -margin and cols.min() == -margin and (cols + 16).max() == 60 + margin
        assert (rows + 16).max() == 60  # the split's edge: never past it


def test_an_image_smaller_than_a_tile_gives_whole_tiles_mirrored_as_inference_pads_it(tmp_path):
    """A chip narrower than a tile: inference pads its tiles with the chip mirrored (again and again where the
    tile is more than twice its size); training windows are whole tiles of exactly those pixels, their targets
    ignored outside the chip, and each holds the pixel it was drawn for. Without an edge margin (zoom on) they
    stay inside the chip."""
    from geoseg.methods.training.data import WindowSampler

    rng = np.random.default_rng(1)
    img = rng.integers(1, 1000, (2, 20, 37)).astype(np.float32)
    ref = np.ones((20, 37), np.uint8)
    ref[3, 30] = 2  # one pixel of the rare class
    src = _two_class_source(tmp_path, img, ref)
    tile, margin = 64, 48  # inference: tile 64, overlap 16
    mirrored = np.pad(img, ((0, 0), (tile, tile), (tile, tile)), mode="reflect")
    sampler = WindowSampler([src], 2, tile, True, edge_margin=margin)
    for _ in range(40):
        _, row, col, h, w = sampler.pick(rng)
        assert (h, w) == (tile, tile) and -margin <= row <= 20 - tile + margin and -margin <= col <= 37 - tile + margin
        got, valid, target = src.read_reflected(row, col, h, w)
        np.testing.assert_array_equal(got, mirrored[:, row + tile : row + 2 * tile, col + tile : col + 2 * tile])
        rows, cols = np.arange(row, row + tile)[:, None], np.arange(col, col + tile)[None, :]
        inside = (rows >= 0) & (rows < 20) & (cols >= 0) & (cols < 37)
        assert valid.all() and ((target == IGNORE_INDEX) == ~inside).all()
        assert (target != IGNORE_INDEX).any()
    # half the draws are for the rare class, and a window holds the pixel it was drawn for
    rare = np.mean([p[1] <= 3 < p[1] + tile and p[2] <= 30 < p[2] + tile for p in (sampler.pick(rng) for _ in range(400))])
    assert rare >= 0.5, rare
    inside_only = WindowSampler([src], 2, tile, True, edge_margin=0)
    assert all(p[1:] == (0, 0, 20, 37) for p in (inside_only.pick(rng) for _ in range(20)))


def test_a_training_reference_of_several_bands_is_refused_not_read_as_its_first(tmp_path):
    """A Dynamic World export (nine class probabilities, then ``label``): band 1 is water probability."""
    import pytest

    from geoseg.errors import InputError

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (3, 32, 32)).astype(np.uint8)
    ref = np.concatenate([rng.integers(0, 100, (9, 32, 32)), rng.integers(0, 9, (1, 32, 32))]).astype(np.uint8)
    with pytest.raises(InputError, match=r"training reference .*ref.tif has 10 bands.*gdal_translate -b N ref.tif"):
        _two_class_source(tmp_path, img, ref)
    assert _two_class_source(tmp_path, img, ref[9]).ref_source.bands == (1,)  # the label band alone


def test_a_training_image_with_an_unnamed_band_among_named_ones_is_refused(tmp_path):
    """An RGB orthophoto's 4th band written without the alpha flag: transparency or NIR, the file cannot say."""
    import pytest

    from geoseg.errors import InputError

    rng = np.random.default_rng(2)
    img = rng.integers(1, 255, (4, 32, 32)).astype(np.uint8)
    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(tmp_path / "ortho.tif", img, transform=tr)
    with rasterio.open(tmp_path / "ortho.tif", "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    write_raster(tmp_path / "ref.tif", rng.integers(1, 3, (32, 32)).astype(np.uint8), transform=tr, nodata=0)
    from geoseg.methods.training.data import TrainSource, _resolve_class_lut

    pair = TrainPair(image=tmp_path / "ortho.tif", reference=tmp_path / "ref.tif")
    with pytest.raises(InputError, match=r"training image .*ortho.tif: band 4 has no description or colour"):
        TrainSource(pair, None, _resolve_class_lut(CLASSES), (0.0, 1.0))
