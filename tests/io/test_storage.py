"""Label stores and published outputs on a real S3-compatible server (moto on loopback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError, LabelStoreError, OutputError, OutputInUseError
from geoseg.io import storage
from geoseg.io.labelstore import LabelStoreWriter, read_label_info, read_label_window
from geoseg.legend import ClassInfo
from tests.fixtures import chunk_grid
from tests.s3server import s3_bucket, s3_env  # noqa: F401 - fixtures

LEGEND = (ClassInfo(0, "a", "#ff0000"), ClassInfo(1, "b", "#00ff00"))


def _chunk(window, seed):
    return np.random.default_rng(seed).integers(0, 2, (window.height, window.width), dtype=np.uint8)


def test_store_on_s3_resumes_commits_last_and_gdal_reads_it(s3_bucket):  # noqa: F811
    grid = chunk_grid(150, 200, 64)
    url = storage.join(s3_bucket, "run", "labels.zarr")
    windows = list(grid.windows())
    writer = LabelStoreWriter.create(url, grid, LEGEND, resume_key="k1")
    for i, w in enumerate(windows[:3]):
        LabelStoreWriter(url, grid).write(w, _chunk(w, i))  # as a task would
    assert writer.done_windows() == {w.key for w in windows[:3]}
    with pytest.raises(LabelStoreError, match="unfinished"):
        read_label_info(url)  # not committed yet
    with pytest.raises(OutputError, match="never written"):
        writer.finalize()

    # a rerun with the same key keeps the done chunks; another key starts afresh
    assert LabelStoreWriter.create(url, grid, LEGEND, resume_key="k1").done_windows() == {w.key for w in windows[:3]}
    for i, w in enumerate(windows[3:], start=3):
        LabelStoreWriter(url, grid).write(w, _chunk(w, i))
    assert writer.finalize() == url
    expected = np.full(grid.shape, 255, np.uint8)
    for i, w in enumerate(windows):
        expected[w.slices] = _chunk(w, i)
    info = read_label_info(url)
    assert info.grid.shape == grid.shape and info.legend == LEGEND and info.path == url
    assert np.array_equal(read_label_window(url, windows[4]), expected[windows[4].slices])
    with rasterio.open(f'ZARR:"/vsis3/{url[5:]}":/labels') as ds:  # GDAL, an independent reader
        assert np.array_equal(ds.read(1), expected)
        assert ds.transform == grid.transform
    assert not storage.listdir(storage.join(url, ".geoseg-chunks"))

    LabelStoreWriter.create(url, grid, LEGEND, resume_key="k2")
    with pytest.raises(InputError):
        read_label_info(url)  # the rerun unpublished it before changing anything
    assert LabelStoreWriter(url, grid).done_windows() == set()


def test_publish_lists_outputs_with_sizes_written_last(s3_bucket, tmp_path):  # noqa: F811
    prefix = storage.join(s3_bucket, "out")
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    storage.upload(tmp_path / "a.csv", storage.join(prefix, "a.csv"))
    assert storage.read_manifest(prefix) is None
    manifest = storage.publish(prefix, {"metrics": storage.join(prefix, "a.csv")})
    assert manifest["outputs"]["metrics"]["bytes"] == (tmp_path / "a.csv").stat().st_size
    assert storage.read_manifest(prefix) == json.loads(storage.read_text(storage.join(prefix, storage.MANIFEST)))
    with pytest.raises(OutputError, match="missing"):
        storage.publish(prefix, {"gone": storage.join(prefix, "nothing.csv")})
    storage.unpublish(prefix)
    assert storage.read_manifest(prefix) is None


def test_prefix_of_another_job_or_foreign_files_is_refused(s3_bucket):  # noqa: F811
    ours = storage.RemoteOutput(storage.join(s3_bucket, "ours"))
    ours.check("job-a")  # empty: fine
    storage.write_bytes(ours.target("run.json"), json.dumps({"job": {"name": "job-a"}}).encode())
    ours.check("job-a")  # a rerun of the same job: fine
    with pytest.raises(OutputInUseError):
        ours.check("job-b")
    foreign = storage.RemoteOutput(storage.join(s3_bucket, "foreign"))
    storage.write_bytes(foreign.target("data.bin"), b"x")
    with pytest.raises(OutputError, match="not empty"):
        foreign.check("job-a")
