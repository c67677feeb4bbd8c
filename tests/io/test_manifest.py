"""Finished label stores carry a chunk manifest; readers refuse a missing or corrupt chunk (issue 14, finding 4)."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest
import rasterio

from geoseg.cli import main
from geoseg.errors import LabelStoreError
from geoseg.geo import Window
from geoseg.io.labelstore import LabelStoreWriter, open_labels, read_label_window
from geoseg.io.manifest import MANIFEST_FILE, verify_store
from geoseg.legend import ClassInfo
from tests.fixtures import blocky_classes, chunk_grid, write_raster

LEGEND = tuple(ClassInfo(i, f"c{i}", "#102030") for i in range(4))


def _store(tmp_path, chunk=64):
    grid = chunk_grid(150, 200, chunk)
    labels = blocky_classes(150, 200)
    labels[:64, :64] = 255  # one chunk all nodata: Zarr does not write it
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", grid, LEGEND)
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize(), labels, grid


def test_manifest_lists_every_chunk_object_with_its_crc(tmp_path):
    store, labels, grid = _store(tmp_path)
    manifest = json.loads((store / MANIFEST_FILE).read_text())["arrays"]["labels"]
    written = {p.name for p in (store / "labels").iterdir() if not p.name.startswith(".")}
    assert set(manifest["chunks"]) == written and len(written) == grid.n_chunks - 1  # the nodata chunk
    assert manifest["chunk_grid"] == list(grid.chunks_shape)
    for name, crc in manifest["chunks"].items():
        assert crc == zlib.crc32((store / "labels" / name).read_bytes())
    assert verify_store(store) == []
    whole = Window(0, 0, 150, 200)
    assert np.array_equal(read_label_window(store, whole), labels)
    assert np.array_equal(open_labels(store).values, labels)
    with rasterio.open(store) as ds:  # GDAL still reads the store, manifest or not
        assert np.array_equal(ds.read(1), labels)


def test_deleted_chunk_is_refused_naming_it(tmp_path):
    store, labels, _ = _store(tmp_path)
    os.remove(store / "labels" / "1.2")
    with pytest.raises(LabelStoreError, match=r"chunk labels/1\.2 of label store .*labels\.zarr is missing"):
        read_label_window(store, Window(64, 128, 64, 64))
    with pytest.raises(LabelStoreError, match=r"labels/1\.2 .* is missing"):
        open_labels(store).values  # noqa: B018 - the lazy read is the test
    assert np.array_equal(read_label_window(store, Window(0, 0, 64, 64)), labels[:64, :64])  # others still read
    assert verify_store(store) == [(f"chunk labels/1.2 of label store {store} is missing; "
                                    "restore the store or rerun the job that wrote it")]


def test_corrupt_chunk_is_refused_naming_it(tmp_path):
    store, _, _ = _store(tmp_path)
    chunk = store / "labels" / "0.1"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(LabelStoreError, match=r"chunk labels/0\.1 of label store .* is corrupt"):
        read_label_window(store, Window(0, 0, 150, 200))
    (problem,) = verify_store(store)
    assert "labels/0.1" in problem and "corrupt" in problem


def test_store_without_manifest_still_reads_and_a_bad_chunk_is_a_user_error(tmp_path):
    """Stores of older versions have no manifest: read unverified, a zstd failure is still one line."""
    store, labels, _ = _store(tmp_path)
    os.remove(store / MANIFEST_FILE)
    assert np.array_equal(read_label_window(store, Window(0, 0, 150, 200)), labels)
    (store / "labels" / "0.1").write_bytes(b"not zstd at all")
    with pytest.raises(LabelStoreError, match=r"labels\.zarr"):
        read_label_window(store, Window(0, 0, 150, 200))


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_vectorize_and_evaluate_cli_refuse_a_damaged_store(tmp_path, capsys, damage):
    """Before: a deleted chunk vectorised and evaluated as a nodata hole (exit 0); a corrupt one was
    ``unexpected error (RuntimeError ...Zstd...)``. Now: exit 2, one line naming the chunk."""
    store, labels, _ = _store(tmp_path)
    chunk = store / "labels" / "1.1"
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:-7] + b"garbage")
    ref = write_raster(tmp_path / "ref.tif", labels, nodata=255)
    for argv in (["vectorize", str(store), str(tmp_path / "p.gpkg")],
                 ["evaluate", str(store), str(ref), "--out", str(tmp_path / "ev")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("geoseg: error: chunk labels/1.1 of label store"), err
    assert not (tmp_path / "p.gpkg").exists()


def test_other_rasters_on_the_label_grid_are_verified_too(tmp_path):
    """confidence.zarr (array ``confidence``) carries a manifest of its own chunks."""
    grid = chunk_grid(100, 100, 64)
    writer = LabelStoreWriter.create(tmp_path / "confidence.zarr", grid, (), array="confidence")
    for w in grid.windows():
        writer.write(w, np.full((w.height, w.width), 80, np.uint8))
    store = writer.finalize()
    assert verify_store(store) == []
    (store / "confidence" / "1.0").unlink()
    assert verify_store(store) == [(f"chunk confidence/1.0 of label store {store} is missing; "
                                    "restore the store or rerun the job that wrote it")]
