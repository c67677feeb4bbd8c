"""COG export and Zarr overviews: valid, georeferenced, coloured, and harmless to the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import JobSpecError
from geoseg.geo import GeoGrid
from geoseg.io.export import build_overviews, downsample_mode, downsample_nearest, export_cog, overview_path
from geoseg.io.labelstore import LabelStoreWriter, open_labels, read_label_info
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL

CRS_ = CRS.from_epsg(32633)
TRANSFORM = Affine(10, 0, 600000, 0, -10, 5200000)


def _labels(h: int, w: int) -> np.ndarray:
    labels = (np.add.outer(np.arange(h) // 37, np.arange(w) // 53) % 6 + 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    labels[rng.random((h, w)) < 0.05] = rng.integers(1, 7)
    labels[:40, :60] = NODATA_LABEL
    return labels


def block_mode(labels: np.ndarray, factor: int, nodata: int = NODATA_LABEL) -> np.ndarray:
    """Oracle for mode overviews, independent of geoseg: a per-block histogram by one ``bincount``
    over (block index * 256 + value); nodata is not counted, ties go to the lowest value, edge
    blocks are padded with nodata, blocks without a class stay nodata."""
    h, w = labels.shape
    oh, ow = -(-h // factor), -(-w // factor)
    padded = np.full((oh * factor, ow * factor), nodata, np.int64)
    padded[:h, :w] = labels
    blocks = padded.reshape(oh, factor, ow, factor).swapaxes(1, 2).reshape(oh * ow, factor * factor)
    hist = np.bincount((blocks + 256 * np.arange(oh * ow)[:, None]).ravel(), minlength=256 * oh * ow)
    hist = hist.reshape(oh * ow, 256)
    hist[:, nodata] = 0
    mode = np.where(hist.max(axis=1) > 0, hist.argmax(axis=1), nodata)  # argmax: first (lowest) of ties
    return mode.reshape(oh, ow).astype(labels.dtype)


def gdal_nearest(path: Path, factor: int) -> np.ndarray:
    """Oracle for nearest overviews: GDAL's own nearest-neighbour decimated read of the labels."""
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        assert ds.overviews(1) == []  # GDAL reads the full-resolution band, not a pyramid level
        return ds.read(1, out_shape=(-(-ds.height // factor), -(-ds.width // factor)), resampling=Resampling.nearest)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    labels = _labels(600, 700)
    grid = GeoGrid.of(600, 700, TRANSFORM, CRS_).tiles(256)
    path = tmp_path_factory.mktemp("s") / "labels.zarr"
    writer = LabelStoreWriter.create(path, grid, LANDCOVER_CLASSES)
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize(), labels


def test_export_cog_is_a_valid_tiled_cog_with_overviews_and_colours(store, tmp_path):
    path, labels = store
    out = export_cog(path, tmp_path / "labels.tif", blocksize=128)
    # no temporaries left; beside the COG: GDAL's category names and the QGIS style
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.qml", "labels.tif", "labels.tif.aux.xml"]
    with rasterio.open(out) as ds:
        assert ds.driver == "GTiff" and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.profile["tiled"] and ds.block_shapes[0] == (128, 128)
        assert ds.overviews(1) == [2, 4, 8]  # halving until a level fits one block
        assert ds.crs == CRS_ and ds.transform.almost_equals(TRANSFORM)
        assert ds.nodata == NODATA_LABEL
        cmap = ds.colormap(1)
        present = {int(v) for v in np.unique(labels)} - {NODATA_LABEL}
        for c in LANDCOVER_CLASSES:
            assert cmap[c.id][:3] == c.rgb() or c.id not in present
        assert len(cmap) == max(present) + 1  # the classes, not 256 entries mostly black
        assert {k for k, v in cmap.items() if v[3]} == present  # classes absent from the raster: no entry
        np.testing.assert_array_equal(ds.read(1), labels)
        ov = ds.read(1, out_shape=(ds.height // 4, ds.width // 4))
        assert set(np.unique(ov)) <= set(np.unique(labels))  # mode keeps real classes


def test_export_cog_nearest_and_forced_overview_count(store, tmp_path):
    path, _ = store
    out = export_cog(path, tmp_path / "n.tif", blocksize=256, overview_resampling="nearest", overview_count=3)
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4, 8]


@pytest.mark.parametrize("resampling", ["mode", "nearest"])
def test_export_cog_overviews_equal_gdals_own(store, tmp_path, resampling):
    """The COG's overviews are what GDAL's overview builder (gdaladdo) makes of the same labels with
    the same resampling and nodata: a plain GeoTIFF written here, its overviews built by GDAL."""
    from rasterio.enums import Resampling

    path, labels = store
    out = export_cog(path, tmp_path / "labels.tif", blocksize=128, overview_resampling=resampling)
    ref = tmp_path / "ref.tif"
    with rasterio.open(ref, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                       dtype="uint8", nodata=NODATA_LABEL, transform=TRANSFORM, crs=CRS_) as ds:
        ds.write(labels, 1)
        ds.build_overviews([2, 4], getattr(Resampling, resampling))
    for level in (0, 1):  # factors 2 and 4 (GDAL rounds the size of deeper levels differently)
        with rasterio.open(out, overview_level=level) as a, rasterio.open(ref, overview_level=level) as b:
            assert a.shape == b.shape == (-(-600 // 2 ** (level + 1)), -(-700 // 2 ** (level + 1)))
            np.testing.assert_array_equal(a.read(1), b.read(1))

def test_export_cog_failure_leaves_nothing(store, tmp_path, monkeypatch):
    import rasterio.shutil

    def boom(*args, **kwargs):
        raise RuntimeError("no space")

    monkeypatch.setattr(rasterio.shutil, "copy", boom)
    with pytest.raises(RuntimeError, match="no space"):
        export_cog(store[0], tmp_path / "labels.tif")
    assert list(tmp_path.iterdir()) == []


def test_export_cog_rejects_unknown_resampling(store, tmp_path):
    with pytest.raises(JobSpecError):
        export_cog(store[0], tmp_path / "x.tif", overview_resampling="bilinear")


def test_downsample_mode_ignores_nodata_and_pads_edges():
    a = np.array([[1, 1, 2, 255, 3], [2, 255, 2, 255, 3], [4, 4, 4, 4, 255]], np.uint8)
    assert downsample_mode(a, 2).tolist() == [[1, 2, 3], [4, 4, 255]]
    assert downsample_nearest(a, 2).tolist() == [[255, 255, 3], [4, 4, 255]]


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_mode_equals_a_block_histogram(factor):
    labels = _labels(61, 83)  # odd sizes: partial edge blocks; 5 % noise makes ties
    np.testing.assert_array_equal(downsample_mode(labels, factor), block_mode(labels, factor))


def test_block_mode_oracle_on_a_hand_made_block():
    a = np.array([[1, 1, 2, 255, 3], [2, 255, 2, 255, 3], [4, 4, 4, 4, 255]], np.uint8)
    assert block_mode(a, 2).tolist() == [[1, 2, 3], [4, 4, 255]]
    assert block_mode(np.array([[7, 5], [5, 7]], np.uint8), 2).tolist() == [[5]]  # a tie: the lowest


def test_build_overviews_keeps_the_store_readable(tmp_path, store):
    import shutil

    src, labels = store
    path = tmp_path / "labels.zarr"
    shutil.copytree(src, path)
    before = read_label_info(path)
    paths = build_overviews(path, (2, 4, 8))
    assert paths == [overview_path(path, f) for f in (2, 4, 8)] == [path / "overviews" / str(f) for f in (2, 4, 8)]
    # the store itself is unchanged for GDAL, xarray and geoseg
    with rasterio.open(path) as ds:
        assert ds.count == 1 and ds.shape == labels.shape and ds.crs == CRS_
        np.testing.assert_array_equal(ds.read(1), labels)
    assert read_label_info(path) == before
    assert open_labels(path).shape == labels.shape
    # each level is a georeferenced label store of its own; levels cascade by mode
    expected = labels
    for factor, p in zip((2, 4, 8), paths):
        expected = block_mode(expected, 2)
        info = read_label_info(p)
        assert info.grid.transform == TRANSFORM * Affine.scale(factor)
        assert info.legend == before.legend and info.grid.crs == CRS_
        assert f'label="{before.legend[0].name}"' in (p.parent / f"{factor}.qml").read_text()  # QGIS' default style
        with rasterio.open(p) as ds:
            assert ds.shape == (-(-600 // factor), -(-700 // factor))
            assert ds.transform.almost_equals(TRANSFORM * Affine.scale(factor))
            np.testing.assert_array_equal(ds.read(1), expected)


def test_build_overviews_nearest_and_rebuild(tmp_path, store):
    import shutil

    src, labels = store
    path = tmp_path / "labels.zarr"
    shutil.copytree(src, path)
    build_overviews(path, (2,))
    (p,) = build_overviews(path, (2,), resampling="nearest")
    with rasterio.open(p) as ds:
        np.testing.assert_array_equal(ds.read(1), gdal_nearest(src, 2))


@pytest.mark.parametrize("levels", [(), (1, 2), (4, 2), (2, 3)])
def test_build_overviews_rejects_bad_levels(store, levels):
    with pytest.raises(JobSpecError):
        build_overviews(store[0], levels)
