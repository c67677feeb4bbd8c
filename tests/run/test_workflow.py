"""The workflow end to end on a real multi-process local cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import zarr

from geoseg.errors import OutputInUseError
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def _job(scene, out, **over):
    job = {"name": "t", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
           "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "features": {"indices": ["ndvi"]}},
           "vectorize": {"enabled": False}}
    job.update(over)
    return parse_job(job)


def _labels(out):
    with rasterio.open(out / "labels.zarr") as ds:
        return ds.read(1)


def test_kmeans_job_writes_labels_and_run_record(tmp_path, dask_client):
    scene, classes = blocky_scene(tmp_path)
    result = run_job(_job(scene, tmp_path / "out"), client=dask_client, show_progress=False)
    labels = _labels(tmp_path / "out")
    valid = labels != 255
    assert (~valid).sum() == 20 * 25  # the nodata corner
    assert len({(int(c), int(lbl)) for c, lbl in zip(classes[valid], labels[valid])}) == 4
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["outcome"] == "complete"
    assert set(record["stage_seconds"]) >= {"fit", "predict"}
    assert record["inputs"][0]["bytes"] == scene.stat().st_size
    assert record["versions"]["dask"] and record["cluster"]["n_workers"] == 2
    assert sum(result.label_counts.values()) == labels.size


def test_same_labels_on_one_and_two_workers(tmp_path):
    """Byte-identical labels whatever the number of workers (separate local clusters)."""
    scene, _ = blocky_scene(tmp_path)
    for n in (1, 2):
        run_job(_job(scene, tmp_path / f"out{n}", cluster={"n_workers": n}), show_progress=False)
    z1 = zarr.open_array(str(tmp_path / "out1" / "labels.zarr" / "labels"), mode="r")
    z2 = zarr.open_array(str(tmp_path / "out2" / "labels.zarr" / "labels"), mode="r")
    assert z1[:].tobytes() == z2[:].tobytes()
    for chunk in (tmp_path / "out1" / "labels.zarr" / "labels").iterdir():
        assert chunk.read_bytes() == (tmp_path / "out2" / "labels.zarr" / "labels" / chunk.name).read_bytes()


def test_interrupted_run_resumes_without_redoing_chunks(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path)
    run_job(_job(scene, tmp_path / "ref"), client=dask_client, show_progress=False)
    expected = _labels(tmp_path / "ref")
    # simulate a run killed after the first chunk: same job, store partly written
    out = tmp_path / "out"
    run_job(_job(scene, out), client=dask_client, show_progress=False)
    store = out / "labels.zarr"
    key = json.loads((store / "labels" / ".zattrs").read_text())["geoseg:resume_key"]
    from geoseg.io.scene import open_scene

    sc = open_scene(str(scene))
    grid = sc.chunk_grid(128)
    writer = LabelStoreWriter.create(store, grid, (), resume_key=key)
    first = next(grid.windows())
    # a done chunk with sentinel content shows whether the rerun recomputed it
    writer.write(first, np.full((first.height, first.width), 7, np.uint8))
    import shutil

    shutil.rmtree(store)
    run_job(_job(scene, out), client=dask_client, show_progress=False)
    resumed = _labels(out)
    assert (resumed[first.slices] == 7).all()  # kept, not recomputed
    np.testing.assert_array_equal(resumed[128:], expected[128:])


def test_changed_parameters_do_not_reuse_chunks(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path)
    out = tmp_path / "out"
    run_job(_job(scene, out), client=dask_client, show_progress=False)
    key1 = json.loads((out / "labels.zarr" / "labels" / ".zattrs").read_text())["geoseg:resume_key"]
    run_job(_job(scene, out, method={"kind": "kmeans", "n_clusters": 3, "sample_size": 5000}),
            client=dask_client, show_progress=False)
    key2 = json.loads((out / "labels.zarr" / "labels" / ".zattrs").read_text())["geoseg:resume_key"]
    assert key1 != key2
    assert len(set(np.unique(_labels(out))) - {255}) == 3


def test_output_folder_of_another_job_is_refused(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path)
    run_job(_job(scene, tmp_path / "out"), client=dask_client, show_progress=False)
    with pytest.raises(OutputInUseError):
        run_job(_job(scene, tmp_path / "out", name="other"), client=dask_client, show_progress=False)


def test_cli_reports_bad_job_without_traceback(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("name: x\ninputs: [missing.tif]\noutput: out\nmethod: {kind: kmeans, clusters: 3}\n")
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "method.kmeans.clusters: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    job.write_text(f"name: x\ninputs: [{tmp_path}/missing.tif]\noutput: {tmp_path}/out\n")
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job)], capture_output=True, text=True)
    assert proc.returncode == 2 and "matches no file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_kmeans_labels_do_not_depend_on_chunk_size(tmp_path, dask_client):
    """The sample is drawn on a fixed grid, so two chunk sizes give the same model and the same labels
    (before, each chunk size drew its own sample: other centroids, other labels)."""
    scene, _ = blocky_scene(tmp_path, height=2300, width=2200)  # more than one sampling chunk of 2048
    labels, models = [], []
    for chunk in (256, 512):
        out = tmp_path / f"out{chunk}"
        run_job(_job(scene, out, chunk_size=chunk), client=dask_client, show_progress=False)
        labels.append(_labels(out))
        models.append(json.loads((out / "model.json").read_text()))
    assert models[0]["centroids"] == models[1]["centroids"] and models[0]["mean"] == models[1]["mean"]
    np.testing.assert_array_equal(labels[0], labels[1])


def test_cli_reports_an_input_error_met_on_a_worker_in_one_line(tmp_path):
    """An all-nodata scene is found out by the k-means fit on a worker: the local workers log nothing
    of it (Dask's "Compute Failed" report, with a traceback, went to the same terminal), the client says
    it once, exit 2, and run.json records the failure."""
    import yaml
    from rasterio.transform import from_origin

    image = tmp_path / "nodata.tif"
    with rasterio.open(image, "w", driver="GTiff", width=300, height=260, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500_000, 5_000_000, 10, 10), tiled=True,
                       blockxsize=128, blockysize=128) as ds:
        ds.write(np.zeros((4, 260, 300), np.uint16))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "nodata", "inputs": [str(image)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 2000}, "vectorize": {"enabled": False},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
    }))
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "geoseg: error: the input has no valid pixels (all nodata or NaN); nothing to cluster"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["outcome"] == "failed"
    assert not (tmp_path / "out" / "labels.zarr").exists()


def test_export_stage_writes_cog_and_overviews_and_reruns_cleanly(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path, height=1100, width=1050)  # larger than one COG block: overviews
    job = _job(scene, tmp_path / "out", export={"cog": True, "overviews": [2, 4]})
    result = run_job(job, client=dask_client, show_progress=False)
    labels = _labels(tmp_path / "out")
    with rasterio.open(result.outputs["cog"]) as ds:
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.overviews(1)
    with rasterio.open(tmp_path / "out" / "labels.zarr" / "overviews" / "4") as ds:
        assert (ds.height, ds.width) == (-(-labels.shape[0] // 4), -(-labels.shape[1] // 4))
    again = run_job(job, client=dask_client, show_progress=False)  # the same job again: nothing breaks
    np.testing.assert_array_equal(_labels(tmp_path / "out"), labels)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["outcome"] == "complete"
    assert again.outputs["cog"].exists()
