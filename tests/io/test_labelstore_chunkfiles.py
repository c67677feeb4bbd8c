"""Label chunks written straight to their files (geoseg.io.labelstore._write_chunk_file) are the
files Zarr itself writes, byte for byte, and read back through Zarr and GDAL."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from rasterio.crs import CRS

from geoseg.geo import GeoGrid
from geoseg.io import labelstore
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL

GRID = GeoGrid.of(70, 90, Affine(10, 0, 600000, 0, -10, 5200000), CRS.from_epsg(32633)).tiles(32)


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    full = rng.integers(0, 6, GRID.shape).astype(np.uint8)
    full[:32, 32:64] = NODATA_LABEL  # one chunk all nodata: not stored
    full[64:, :7] = NODATA_LABEL  # part of an edge chunk
    return full


def _store_files(path) -> dict[str, bytes]:
    folder = path.with_name(path.name + ".partial") / "labels"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _write_all(path, full, monkeypatch=None):
    if monkeypatch is not None:  # Zarr writes every chunk, as before
        monkeypatch.setattr(labelstore, "_write_chunk_file", lambda *a: False)
    writer = LabelStoreWriter.create(path, GRID, LANDCOVER_CLASSES, resume_key="a")
    for w in GRID.windows():
        writer.write(w, full[w.slices])
    if monkeypatch is not None:
        monkeypatch.undo()
    return writer


def test_chunk_files_are_zarrs_own_bytes_and_gdal_reads_them(tmp_path, monkeypatch):
    full = _labels()
    ours = _write_all(tmp_path / "a" / "labels.zarr", full)
    _write_all(tmp_path / "b" / "labels.zarr", full, monkeypatch)
    mine, zarrs = _store_files(tmp_path / "a" / "labels.zarr"), _store_files(tmp_path / "b" / "labels.zarr")
    assert sorted(mine) == sorted(zarrs) and "0.1" not in mine and "2.2" in mine  # edge chunks included
    assert mine == zarrs
    final = ours.finalize()
    with rasterio.open(final) as ds:
        np.testing.assert_array_equal(ds.read(1), full)
    np.testing.assert_array_equal(zarr.open_array(str(final / "labels"), mode="r")[:], full)


def test_a_chunk_rewritten_as_all_nodata_loses_its_file(tmp_path):
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", GRID, LANDCOVER_CLASSES, resume_key="a")
    first = next(GRID.windows())
    writer.write(first, np.zeros((first.height, first.width), np.uint8))
    assert "0.0" in _store_files(tmp_path / "labels.zarr")
    writer.write(first, np.full((first.height, first.width), NODATA_LABEL, np.uint8))
    assert "0.0" not in _store_files(tmp_path / "labels.zarr")


@pytest.mark.parametrize("compressor", [None, "zlib"])
def test_other_compressors_of_the_array_are_honoured(tmp_path, monkeypatch, compressor):
    import numcodecs

    codec = numcodecs.Zlib(level=1) if compressor else None
    monkeypatch.setattr(labelstore, "_compressor", lambda: codec)
    full = _labels()
    ours = _write_all(tmp_path / "a" / "labels.zarr", full)
    _write_all(tmp_path / "b" / "labels.zarr", full, monkeypatch)
    assert _store_files(tmp_path / "a" / "labels.zarr") == _store_files(tmp_path / "b" / "labels.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(ours.partial_path / "labels"), mode="r")[:], full)
