"""Many small tiles read through one VRT: the same pixels as file by file, and no file the job did not name."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io import mosaic, tilevrt
from geoseg.io.scene import open_scene, read_window, read_windows

T = 12  # tile side (px)
ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0)


def _tiles(folder, n=6, dtype="uint16", alpha=True, nodata=7, skip=((2, 3),), overlap=0, seed=0):
    """``n`` x ``n`` tiles of ``T`` px (``overlap`` px into the next), with alpha holes and nodata pixels; tile
    ``skip`` is missing. Returns the oracle: values of the first valid tile per pixel, and validity."""
    rng = np.random.default_rng(seed)
    side = n * T + overlap
    values = np.zeros((3, side, side), np.float32)
    valid = np.zeros((side, side), bool)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for j in range(n):
            if (i, j) in skip:
                continue
            h = w = T + overlap
            data = rng.integers(1, 5000, (3, h, w)).astype(dtype)
            if np.dtype(dtype).kind == "f":
                data[0, rng.random((h, w)) < 0.05] = np.nan
            data[1, rng.random((h, w)) < 0.05] = nodata
            ok = np.all(data != nodata, axis=0) & np.all(np.isfinite(data.astype(np.float64)), axis=0)
            bands = [data]
            if alpha:
                a = np.where(rng.random((h, w)) < 0.1, 0, 255).astype(dtype)
                ok &= a != 0
                bands.append(a[None])
            path = folder / f"tile_{i:02d}_{j:02d}.tif"
            count = 3 + alpha
            with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=dtype, crs="EPSG:32633",
                               transform=ORIGIN * Affine.translation(j * T, i * T), nodata=nodata,
                               photometric="MINISBLACK") as ds:
                if alpha:  # before the pixels: GDAL writes it into the TIFF's ExtraSamples
                    ds.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined, ColorInterp.alpha]
                ds.write(np.concatenate(bands))
            sl = (slice(i * T, i * T + h), slice(j * T, j * T + w))
            take = ok & ~valid[sl]  # first valid tile in sorted order wins
            values[(slice(None), *sl)][:, take] = data[:, take]
            valid[sl] |= ok
    return values, valid


def _file_by_file(monkeypatch):
    monkeypatch.setattr(mosaic, "VRT_FROM", 10**9)


def _no_file_by_file(monkeypatch):
    """A witness: the file-by-file reader must not run."""
    def refuse(*args, **kwargs):
        raise AssertionError("read file by file")

    monkeypatch.setattr(mosaic, "read_source", refuse)


@pytest.mark.parametrize("dtype, alpha", [("uint16", True), ("float32", False)])
def test_tiles_through_a_vrt_equal_the_files_and_file_by_file(tmp_path, monkeypatch, dtype, alpha):
    values, valid = _tiles(tmp_path / "t", dtype=dtype, alpha=alpha)
    scene = open_scene(str(tmp_path / "t" / "tile_*.tif"))
    assert scene.layers[0].sources[0].mask == ("alpha" if alpha else "nodata")
    for window in (Window(0, 0, scene.height, scene.width), Window(5, 7, 50, 41)):
        part = scene.for_window(window)
        assert len(part.layers[0].sources) >= mosaic.VRT_FROM
        with monkeypatch.context() as m:
            _no_file_by_file(m)
            data, ok = read_window(part, window)
        sl = (slice(window.row_off, window.row_off + window.height), slice(window.col_off, window.col_off + window.width))
        np.testing.assert_array_equal(ok, valid[sl])
        assert 0.5 < ok.mean() < 0.95  # holes, nodata and a missing tile
        np.testing.assert_array_equal(data[:, ok], values[(slice(None), *sl)][:, ok])
        assert not data[:, ~ok].any()
        with monkeypatch.context() as m:
            _file_by_file(m)
            plain, plain_ok = read_window(part, window)
        np.testing.assert_array_equal(plain_ok, ok)
        np.testing.assert_array_equal(plain, data)


def test_overlapping_tiles_are_read_file_by_file_first_wins(tmp_path, monkeypatch):
    values, valid = _tiles(tmp_path / "t", overlap=3)
    scene = open_scene(str(tmp_path / "t" / "tile_*.tif"))
    window = Window(0, 0, scene.height, scene.width)
    calls = []
    monkeypatch.setattr(tilevrt, "vrt_xml", lambda *a: calls.append(a) or "")  # would be read if not refused
    data, ok = read_window(scene, window)
    assert calls == []  # refused before any VRT was written: tiles overlap
    np.testing.assert_array_equal(ok, valid)
    np.testing.assert_array_equal(data[:, ok], values[:, ok])


def test_sample_parts_cut_from_one_read_equal_part_by_part(tmp_path, monkeypatch):
    _tiles(tmp_path / "t")
    scene = open_scene(str(tmp_path / "t" / "tile_*.tif"))
    rng = np.random.default_rng(3)
    parts = [Window(int(r), int(c), 8, 8) for r, c in rng.integers(0, 6 * T - 8, (40, 2))]
    with monkeypatch.context() as m:
        _no_file_by_file(m)
        together = read_windows(scene, parts)
    for part, (data, ok) in zip(parts, together):
        alone, alone_ok = read_window(scene.for_window(part), part)
        np.testing.assert_array_equal(ok, alone_ok)
        np.testing.assert_array_equal(data[:, ok], alone[:, ok])


def test_a_tile_replaced_by_a_vrt_after_the_opener_is_not_followed(tmp_path):
    _tiles(tmp_path / "t")
    secret = tmp_path / "secret.tif"  # a file the job does not name
    with rasterio.open(secret, "w", driver="GTiff", width=T, height=T, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=ORIGIN) as ds:
        ds.write(np.full((4, T, T), 4242, np.uint16))
    scene = open_scene(str(tmp_path / "t" / "tile_*.tif"))
    swapped = tmp_path / "t" / "tile_00_00.tif"
    band = '<VRTRasterBand dataType="UInt16" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">{p}' \
           '</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>'
    swapped.write_text(f'<VRTDataset rasterXSize="{T}" rasterYSize="{T}">'
                       + "".join(band.format(b=b, p=secret) for b in range(1, 5)) + "</VRTDataset>")
    window = Window(0, 0, scene.height, scene.width)
    ours = tilevrt.vrt_xml(scene.layers[0].sources, scene.grid, window)
    # the oracle that the GTiff-only names matter: the same VRT with plain names makes GDAL follow the swapped
    # tile to the secret
    with rasterio.open(ours.replace(tilevrt.GTIFF_ONLY, ""), driver="VRT") as ds:
        assert (ds.read(1, window=((0, T), (0, T))) == 4242).all()
    with rasterio.open(ours, driver="VRT") as ds, pytest.raises(rasterio.errors.RasterioIOError):
        ds.read(1, window=((0, T), (0, T)))  # GTIFF_DIR:1: opens the swapped tile with GTiff only: refused
    with pytest.raises(InputError, match="tile_00_00"):
        read_window(scene, window)
