"""DeepLabV3+ integrated: `geoseg train` job files, and inference through the workflow on a real cluster.

The library pieces (checkpoints, chunk inference, training) have their own tests; these check that
they fit together: a training job file becomes a checkpoint, and `run_job` with that kind of
checkpoint on a multi-process local cluster writes the labels one whole-scene prediction gives,
whatever the chunking, plus a confidence raster, polygons and metrics, and resumes like k-means.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from geoseg.errors import CheckpointError, JobSpecError, ModelInputError
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import CROPWEED_CLASSES, LANDCOVER_CLASSES, NODATA_LABEL
from geoseg.methods.checkpoint import load_checkpoint, save_checkpoint
from geoseg.methods.deeplab import predict_chunk
from geoseg.methods.training import TrainConfig, load_train_job, parse_train_job
from geoseg.run.jobspec import load_job, parse_job
from geoseg.run.labelling import CONFIDENCE_ARRAY, CONFIDENCE_ATTRS
from geoseg.run.workflow import run_job
from geoseg.samples.synthetic import make_scene
from tests.fixtures import tiny_meta, tiny_model

# One thread: the test machine has two cores shared with other work.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
SIZE = 384
#: Nodata corner written into the test scene (rows, cols).
HOLE = (slice(0, 40), slice(0, 56))
CLASSES = [{"id": c.id, "name": c.name, "color": c.color} for c in CROPWEED_CLASSES]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A small cropweed scene (1 cm, red/green/blue/nir, 128 px blocks) with a nodata corner."""
    files = make_scene("cropweed", tmp_path_factory.mktemp("cw"), width=SIZE, height=SIZE, seed=3, block=128)
    with rasterio.open(files.image, "r+") as ds:
        data = ds.read()
        data[:, HOLE[0], HOLE[1]] = ds.nodata
        ds.write(data)
    return files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny untrained network for the scene's bands and resolution (it predicts several classes)."""
    meta = tiny_meta(tile_size=64, tile_overlap=16, band_mean=[95, 120, 80, 160], band_std=[30, 25, 25, 40])
    path = tmp_path_factory.mktemp("ck") / "tiny"
    save_checkpoint(tiny_model(meta, seed=2), meta, path)
    return path


@pytest.fixture(scope="module")
def whole(scene, checkpoint):
    """Labels and confidence of one in-process prediction over the whole scene."""
    model, meta = load_checkpoint(checkpoint)
    with rasterio.open(scene.image) as ds:
        data = ds.read()
        valid = np.all(data != ds.nodata, axis=0)
    labels, conf = predict_chunk(model, meta, data.astype(np.float32), valid, device="cpu", batch_size=8,
                                 return_confidence=True)
    assert len(np.unique(labels[valid])) >= 2  # a model that predicts one class would prove nothing
    return labels, conf, valid


def _job(scene, checkpoint, out, **over):
    job = {
        "name": "cw-deeplab", "inputs": [str(scene.image)], "output": str(out), "chunk_size": 128,
        "method": {"kind": "deeplab", "checkpoint": str(checkpoint), "batch_size": 8, "device": "cpu",
                   "confidence": True},
        "classes": CLASSES,
        "reference": {"path": str(scene.reference)},
        "regions": {"path": str(scene.regions), "field": "region_id"},
        "vectorize": {"enabled": True},
    }
    job.update(over)
    return parse_job(job)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _borders(shape: tuple[int, int], chunk: int, width: int = 16) -> np.ndarray:
    """Pixels within ``width`` of a chunk border of a ``chunk`` grid."""
    band = np.zeros(shape, bool)
    for b in range(chunk, max(shape), chunk):
        band[max(b - width, 0) : b + width, :] = True
        band[:, max(b - width, 0) : b + width] = True
    return band


@pytest.fixture(scope="module")
def run128(scene, checkpoint, dask_client, tmp_path_factory):
    """The DeepLab job with confidence on 128 px chunks (9 chunks, 2 worker processes)."""
    out = tmp_path_factory.mktemp("run") / "out128"
    result = run_job(_job(scene, checkpoint, out), client=dask_client, show_progress=False)
    yield out, result
    # The cluster is shared by the whole session: leave its workers' model caches as we found them.
    from geoseg.methods.deeplab import clear_model_cache

    dask_client.run(clear_model_cache)


# --------------------------------------------------------------------------- (a) training job files


def _train_job_dict(**over) -> dict:
    job = {
        "version": 1, "name": "cw",
        "pairs": [{"image": "data/cropweed_image.tif", "reference": "data/cropweed_reference.tif"}],
        "classes": CLASSES, "encoder": "resnet18", "encoder_depth": 3, "decoder_channels": 16,
        "tile_size": 64, "tile_overlap": 16, "batch_size": 2, "epochs": 2, "steps_per_epoch": 2,
        "class_balanced": True, "val_fraction": 0.25, "val_tiles": 4, "norm_windows": 4, "seed": 0,
        "device": "cpu", "checkpoint": "models/cw",
    }
    job.update(over)
    return job


def test_train_job_file_parses_and_resolves_paths(tmp_path):
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "train.yaml"
    path.write_text(yaml.safe_dump(_train_job_dict(
        val_pairs=[{"image": "/abs/img.tif", "vector": "refs.gpkg", "class_field": "cls"}],
        encoder_weights="weights/r18.safetensors",
    )))
    job = load_train_job(path)
    assert isinstance(job, TrainConfig)
    base = path.resolve().parent
    assert job.pairs[0].image == base / "data/cropweed_image.tif"
    assert job.pairs[0].reference == base / "data/cropweed_reference.tif"
    assert job.val_pairs[0].image == Path("/abs/img.tif") and job.val_pairs[0].vector == base / "refs.gpkg"
    assert job.encoder_weights == base / "weights/r18.safetensors"
    assert job.checkpoint == base / "models/cw"
    assert [c.id for c in job.classes] == [1, 2, 3] and job.classes[2].color == "#e31a1c"
    assert (job.tile_size, job.tile_overlap, job.epochs, job.steps_per_epoch) == (64, 16, 2, 2)
    assert job.class_balanced and job.val_fraction == 0.25 and job.seed == 0 and job.device == "cpu"


def test_train_job_file_refuses_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(JobSpecError) as err:
        parse_train_job(_train_job_dict(epoch=3), "t.yaml")
    assert "epoch: unknown key" in str(err.value)
    bad = _train_job_dict()
    bad["pairs"] = [{"image": "a.tif", "reference": "b.tif", "refrence": "c.tif"}]
    bad["classes"] = [{**CLASSES[0], "colour": "#000000"}, *CLASSES[1:]]
    with pytest.raises(JobSpecError) as err:
        parse_train_job(bad, "t.yaml")
    assert "pairs.0.refrence: unknown key" in str(err.value) and "classes.0.colour: unknown key" in str(err.value)
    with pytest.raises(JobSpecError, match="multiple of 16"):
        parse_train_job(_train_job_dict(tile_size=100))
    with pytest.raises(JobSpecError, match="#rrggbb"):
        parse_train_job(_train_job_dict(classes=[{**CLASSES[0], "color": "brown"}, *CLASSES[1:]]))
    with pytest.raises(JobSpecError, match="exactly one of"):
        parse_train_job(_train_job_dict(pairs=[{"image": "a.tif"}]))
    with pytest.raises(JobSpecError, match="version"):
        parse_train_job(_train_job_dict(version=2))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(JobSpecError, match="must be a YAML mapping"):
        load_train_job(tmp_path / "list.yaml")
    with pytest.raises(JobSpecError, match="cannot read"):
        load_train_job(tmp_path / "absent.yaml")


def test_shipped_workflows_parse_and_fit_together():
    """Every workflows/*.yaml validates; inference jobs read what the training jobs write."""
    trains = {p.stem: load_train_job(p) for p in sorted(WORKFLOWS.glob("*-train.yaml"))}
    jobs = {p.stem: load_job(p) for p in sorted(WORKFLOWS.glob("*.yaml")) if not p.stem.endswith("-train")}
    assert {"landcover-deeplab-train", "cropweed-deeplab-train"} <= set(trains)
    assert {"landcover-deeplab-infer", "cropweed-deeplab-infer", "cropweed-kmeans", "landcover-kmeans"} <= set(jobs)
    legends = {"landcover": list(LANDCOVER_CLASSES), "cropweed": list(CROPWEED_CLASSES)}
    for kind in ("landcover", "cropweed"):
        train, infer = trains[f"{kind}-deeplab-train"], jobs[f"{kind}-deeplab-infer"]
        assert train.classes == legends[kind]
        assert train.pairs[0].image.resolve() == Path(infer.inputs[0]).resolve()
        assert train.pairs[0].image.name == f"{kind}_image.tif"
        assert train.pairs[0].reference.name == f"{kind}_reference.tif"
        assert infer.method.kind == "deeplab" and infer.method.confidence
        assert Path(infer.method.checkpoint).resolve() == train.checkpoint.resolve()
        assert infer.reference.path.name == f"{kind}_reference.tif" and infer.evaluate.mapping == "identity"
        # Small enough for a CPU: a few hundred steps of a shallow network.
        assert train.epochs * train.steps_per_epoch <= 200 and train.encoder_depth <= 4
    km = jobs["cropweed-kmeans"]
    assert km.method.kind == "kmeans" and km.method.n_clusters == 3 and km.regions.field == "region_id"
    for name in ("landcover-deeplab-train", "landcover-deeplab-infer", "cropweed-deeplab-train",
                 "cropweed-deeplab-infer", "cropweed-kmeans"):  # each says how to make its data and run it
        text = (WORKFLOWS / f"{name}.yaml").read_text()
        assert "geoseg synth" in text and ("geoseg run" in text or "geoseg train" in text), name


# --------------------------------------------------------------------------- (b) geoseg train


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_geoseg_train_writes_a_checkpoint_that_loads(tmp_path, scene):
    data = tmp_path / "data"
    data.mkdir()
    for f in (scene.image, scene.reference):
        shutil.copy(f, data / f.name)
    job = tmp_path / "train.yaml"
    job.write_text(yaml.safe_dump(_train_job_dict()))
    proc = _cli("train", str(job), "-q", cwd=ROOT)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "best val mIoU:" in proc.stdout and str(tmp_path / "models" / "cw.safetensors") in proc.stdout
    assert proc.stdout.count("epoch ") >= 2
    # the baselines on the same validation pixels, printed beside the network and written as a table
    assert "validation IoU on" in proc.stdout and "ndvi+otsu" in proc.stdout and "kmeans per scene" in proc.stdout
    table = json.loads((tmp_path / "models" / "cw.baselines.json").read_text())
    assert [t["method"] for t in table] == ["network", "ndvi+otsu", "kmeans", "kmeans per scene"]  # normalisation: scene
    assert len({t["val_px"] for t in table}) == 1 and set(table[1]["val_iou"]) == {"soil", "crop", "weed"}
    model, meta = load_checkpoint(tmp_path / "models" / "cw")
    assert meta.band_names == ["red", "green", "blue", "nir"] and meta.classes == list(CROPWEED_CLASSES)
    assert (meta.tile_size, meta.tile_overlap, meta.encoder_depth) == (64, 16, 3)
    assert meta.resolution == pytest.approx(0.01) and meta.training.epochs == 2
    assert meta.training.best_val_miou is not None and 0 <= meta.training.best_val_miou <= 1
    history = json.loads((tmp_path / "models" / "cw.history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    labels = predict_chunk(model, meta, np.full((4, 64, 64), 100, np.float32), np.ones((64, 64), bool))
    assert set(np.unique(labels)) <= {1, 2, 3}


def test_geoseg_train_reports_user_errors_in_one_line(tmp_path):
    job = tmp_path / "train.yaml"
    job.write_text(yaml.safe_dump(_train_job_dict(epoch=3)))
    proc = _cli("train", str(job))
    assert proc.returncode == 2 and "geoseg: error:" in proc.stderr and "epoch: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    job.write_text(yaml.safe_dump(_train_job_dict()))  # data/ does not exist here
    proc = _cli("train", str(job))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()


# --------------------------------------------------------------------------- (c, d) inference on the cluster


@pytest.mark.integration
def test_deeplab_job_on_a_cluster_matches_one_whole_scene_prediction(run128, whole, dask_client):
    out, result = run128
    labels_whole, conf_whole, valid = whole
    labels = _read(out / "labels.zarr")
    assert labels.shape == (SIZE, SIZE)
    agree = (labels == labels_whole).mean()
    print(f"\nworkflow (128 px chunks, 2 workers) vs whole-scene predict: agreement {agree:.6f}, "
          f"stages {result.stage_seconds}")
    assert agree >= 0.999
    assert (labels[HOLE] == NODATA_LABEL).all() and (labels[valid] != NODATA_LABEL).all()
    assert set(np.unique(labels[valid])) <= {1, 2, 3}

    # The same outputs as a k-means run: polygons, metrics, run record.
    import geopandas as gpd
    import pandas as pd

    assert {"labels", "confidence", "polygons", "metrics", "run"} <= set(result.outputs)
    polys = gpd.read_file(out / "polygons.gpkg", layer="polygons")
    assert len(polys) > 0 and polys.crs == rasterio.open(out / "labels.zarr").crs
    assert set(polys["class_id"]) <= {1, 2, 3} and polys.geometry.is_valid.all()
    assert set(polys["class_name"]) <= {"soil", "crop", "weed"}
    metrics = pd.read_csv(out / "metrics.csv")
    assert "ALL" in set(metrics["region_id"].astype(str)) and metrics["region_id"].nunique() > 1
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete" and record["chunks_total"] == 9
    assert record["job"]["method"]["kind"] == "deeplab" and "confidence" in record["outputs"]
    assert sum(result.label_counts.values()) == SIZE * SIZE

    # Workers run torch with as many threads as they have task slots (1 here), not every core.
    threads = dask_client.run(lambda: torch.get_num_threads())
    nthreads = {w: info["nthreads"] for w, info in dask_client.scheduler_info()["workers"].items()}
    assert threads == nthreads


@pytest.mark.integration
def test_confidence_raster_is_georeferenced_like_the_labels(run128, whole):
    out, _ = run128
    _, conf_whole, valid = whole
    with rasterio.open(out / "labels.zarr") as lab, rasterio.open(out / "confidence.zarr") as ds:
        assert ds.crs == lab.crs and ds.transform == lab.transform and ds.shape == lab.shape
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == NODATA_LABEL
        conf = ds.read(1)
        labels = lab.read(1)
    assert ((conf[valid] >= 0) & (conf[valid] <= 100)).all()
    assert (conf[~valid] == NODATA_LABEL).all() and (conf[labels == NODATA_LABEL] == NODATA_LABEL).all()
    # The probability of the chosen class is at least 1/3 with three classes.
    assert conf[valid].min() >= 33
    expected = np.rint(conf_whole * 100)
    assert np.abs(conf[valid].astype(int) - expected[valid]).max() <= 1
    import zarr

    attrs = dict(zarr.open_group(str(out / "confidence.zarr"), mode="r")[CONFIDENCE_ARRAY].attrs)
    assert attrs["units"] == CONFIDENCE_ATTRS["units"] and "flag_values" not in attrs
    assert attrs["_CRS"]["wkt"] and attrs["geoseg:nodata"] == NODATA_LABEL


@pytest.mark.integration
def test_labels_do_not_depend_on_the_chunk_size(run128, scene, checkpoint, dask_client, tmp_path):
    """Through the workflow: 256 px chunks give the labels of 128 px chunks, also along chunk borders.

    (tests/methods/test_deeplab.py checks the same for predict_chunk alone, with a naive-chunking control.)
    """
    out, _ = run128
    # Rerun the job in a copy of the 128-px output folder, without confidence (and another batch size).
    shutil.copytree(out, tmp_path / "out256")
    method = {"kind": "deeplab", "checkpoint": str(checkpoint), "batch_size": 5, "device": "cpu"}
    job = _job(scene, checkpoint, tmp_path / "out256", chunk_size=256, method=method,
               vectorize={"enabled": False}, reference=None, regions=None)
    result = run_job(job, client=dask_client, show_progress=False)
    a, b = _read(out / "labels.zarr"), _read(tmp_path / "out256" / "labels.zarr")
    assert json.loads((tmp_path / "out256" / "run.json").read_text())["chunks_total"] == 4
    # The earlier run's confidence no longer matches these labels: it is removed, not left behind.
    assert not (tmp_path / "out256" / "confidence.zarr").exists() and "confidence" not in result.outputs
    borders = _borders(a.shape, 128)
    agree, agree_borders = (a == b).mean(), (a[borders] == b[borders]).mean()
    print(f"\nchunk 128 vs 256: agreement {agree:.6f}, within 16 px of 128-px chunk borders {agree_borders:.6f}")
    assert agree >= 0.999 and agree_borders >= 0.999


@pytest.mark.integration
def test_tta_from_the_job_reaches_every_chunk(scene, checkpoint, dask_client, tmp_path):
    """`method.tta: d4` in a job gives the labels of one whole-scene d4 prediction, not the plain ones."""
    method = {"kind": "deeplab", "checkpoint": str(checkpoint), "batch_size": 8, "device": "cpu", "tta": "d4"}
    job = _job(scene, checkpoint, tmp_path / "tta", chunk_size=256, method=method,
               vectorize={"enabled": False}, reference=None, regions=None)
    assert job.method.tta == "d4"
    run_job(job, client=dask_client, show_progress=False)
    model, meta = load_checkpoint(checkpoint)
    with rasterio.open(scene.image) as ds:
        data = ds.read()
        valid = np.all(data != ds.nodata, axis=0)
    d4 = predict_chunk(model, meta, data.astype(np.float32), valid, device="cpu", tta="d4")
    plain = predict_chunk(model, meta, data.astype(np.float32), valid, device="cpu")
    labels = _read(tmp_path / "tta" / "labels.zarr")
    assert (labels == d4).mean() >= 0.999
    assert (labels != plain).mean() > 0.005  # the job did not silently run without TTA
    with pytest.raises(JobSpecError, match="tta"):
        _job(scene, checkpoint, tmp_path / "x", method={**method, "tta": "d8"})


@pytest.mark.integration
def test_interrupted_deeplab_run_resumes_labels_and_confidence(run128, scene, checkpoint, whole, dask_client,
                                                               tmp_path):
    """Chunks done in both stores are kept; a chunk with labels but no confidence is redone."""
    done_out, _ = run128
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(done_out / "run.json", out / "run.json")  # the same job ran here before
    key = json.loads((done_out / "labels.zarr" / "labels" / ".zattrs").read_text())["geoseg:resume_key"]
    from geoseg.io.scene import open_scene

    sc = open_scene(str(scene.image))
    grid = sc.chunk_grid(128)
    labels_w = LabelStoreWriter.create(out / "labels.zarr", grid, tuple(CROPWEED_CLASSES), resume_key=key)
    conf_w = LabelStoreWriter.create(out / "confidence.zarr", grid, (), resume_key=key,
                                     array=CONFIDENCE_ARRAY)
    both, labels_only = grid.window(1, 1), grid.window(2, 2)
    for w in (both, labels_only):
        labels_w.write(w, np.full((w.height, w.width), 2, np.uint8))  # sentinels show what was recomputed
    conf_w.write(both, np.full((both.height, both.width), 42, np.uint8))
    result = run_job(_job(scene, checkpoint, out, vectorize={"enabled": False}, reference=None, regions=None),
                     client=dask_client, show_progress=False)
    labels, conf = _read(out / "labels.zarr"), _read(out / "confidence.zarr")
    assert (labels[both.slices] == 2).all() and (conf[both.slices] == 42).all()  # kept
    assert json.loads((out / "run.json").read_text())["chunks_reused"] == 1
    labels_whole = whole[0]
    assert (labels[labels_only.slices] == labels_whole[labels_only.slices]).mean() >= 0.999  # redone
    rest = np.ones(labels.shape, bool)
    rest[both.slices] = False
    assert (labels[rest] == labels_whole[rest]).mean() >= 0.999
    assert not (out / "labels.zarr.partial").exists() and not (out / "confidence.zarr.partial").exists()
    assert result.outputs["confidence"] == out / "confidence.zarr"


# --------------------------------------------------------------------------- (g) refusals before any output


def test_checkpoint_with_other_bands_is_refused_before_any_output(scene, dask_client, tmp_path):
    meta = tiny_meta(in_channels=3, band_names=["red", "green", "blue"], band_mean=[95, 120, 80],
                     band_std=[30, 25, 25], tile_size=64, tile_overlap=16)
    save_checkpoint(tiny_model(meta), meta, tmp_path / "rgb")
    out = tmp_path / "out"
    with pytest.raises(ModelInputError, match=r"expects 3 bands \(red, green, blue\), image has 4"):
        run_job(_job(scene, tmp_path / "rgb", out), client=dask_client, show_progress=False)
    assert not out.exists()
    with pytest.raises(CheckpointError):
        run_job(_job(scene, tmp_path / "absent", out), client=dask_client, show_progress=False)
    assert not out.exists()
    coarse = tiny_meta(tile_size=64, tile_overlap=16, resolution=0.1)
    save_checkpoint(tiny_model(coarse), coarse, tmp_path / "coarse")
    with pytest.raises(ModelInputError, match="finer"):
        run_job(_job(scene, tmp_path / "coarse", out), client=dask_client, show_progress=False)
    assert not out.exists()


def test_cli_run_refuses_a_checkpoint_for_other_bands_in_one_line(scene, tmp_path):
    meta = tiny_meta(in_channels=3, band_names=["red", "green", "blue"], band_mean=[95, 120, 80],
                     band_std=[30, 25, 25], tile_size=64, tile_overlap=16)
    save_checkpoint(tiny_model(meta), meta, tmp_path / "rgb")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(json.loads(_job(scene, tmp_path / "rgb", tmp_path / "out").model_dump_json())))
    proc = _cli("run", str(job), "-q")
    assert proc.returncode == 2 and "expects 3 bands" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- (f) the same on CUDA


@pytest.mark.gpu
@pytest.mark.integration
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_deeplab_job_on_gpu_workers_matches_cpu(scene, checkpoint, whole, tmp_path):
    """On a machine with a GPU: tasks carry the GPU resource, workers run the model on CUDA."""
    from geoseg.methods.deeplab import cache_info
    from geoseg.run.cluster import connect

    labels_whole, _, valid = whole
    job = _job(scene, checkpoint, tmp_path / "gpu", chunk_size=256,
               method={"kind": "deeplab", "checkpoint": str(checkpoint), "batch_size": 16, "device": "auto",
                       "confidence": True})
    with connect(None, n_workers=2, threads_per_worker=1, memory_limit="8GiB", dashboard=False) as (client, info):
        assert info.gpu_workers >= 1
        result = run_job(job, client=client, show_progress=False)
        devices = {key[-1] for keys in client.run(cache_info).values() for key in keys}
    assert devices == {"cuda"}
    labels = _read(tmp_path / "gpu" / "labels.zarr")
    agree = (labels == labels_whole).mean()
    print(f"\nGPU workflow vs CPU whole-scene predict: agreement {agree:.5f}; stages {result.stage_seconds}")
    assert agree >= 0.98  # bf16/fp16 autocast on CUDA
    conf = _read(tmp_path / "gpu" / "confidence.zarr")
    assert ((conf[valid] >= 33) & (conf[valid] <= 100)).all() and (conf[~valid] == NODATA_LABEL).all()
    assert json.loads((tmp_path / "gpu" / "run.json").read_text())["cluster"]["gpu_workers"] >= 1
