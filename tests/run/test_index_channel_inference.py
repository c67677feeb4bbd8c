"""A checkpoint trained with index channels, run as a job: every chunk's network input holds the same channels,
and an image without the roles the indices need is refused before the cluster starts and before any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
import yaml

from geoseg.errors import ModelInputError
from geoseg.legend import CROPWEED_CLASSES
from geoseg.methods.checkpoint import load_checkpoint, read_meta
from geoseg.methods.deeplab import clear_model_cache, get_worker_model, predict_chunk
from geoseg.methods.training import TrainConfig, TrainPair, train
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.synthetic import make_scene
from tests.fixtures import write_raster

# One thread: the test machine has two cores shared with other work.
torch.set_num_threads(1)

SIZE = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-band crop/weed scene and a tiny DeepLabV3+ trained on it with ``index_channels: [exg, ndvi]``."""
    folder = tmp_path_factory.mktemp("idxrun")
    files = make_scene("cropweed", folder / "cw", width=SIZE, height=SIZE, seed=2, block=128)
    cfg = TrainConfig(
        pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(CROPWEED_CLASSES),
        index_channels=["exg", "ndvi"], normalisation="training",
        encoder="resnet18", encoder_depth=3, decoder_channels=16, tile_size=64,
        tile_overlap=16, batch_size=2, epochs=1, steps_per_epoch=2, val_fraction=0.25, val_tiles=2, norm_windows=4,
        seed=0, progress=False, checkpoint=folder / "m",
    )
    train(cfg)
    return files, cfg.checkpoint


def _job(image, checkpoint, out, chunk: int = 64) -> dict:
    return {"name": "idx", "inputs": [str(image)], "output": str(out), "chunk_size": chunk,
            "method": {"kind": "deeplab", "checkpoint": str(checkpoint), "batch_size": 4, "device": "cpu"},
            "vectorize": {"enabled": False}}


def _by_hand(raw: np.ndarray) -> np.ndarray:
    """ExG and NDVI of raw ``(red, green, blue, nir, ...)`` values in float64, with geoseg's 1e-6 in the denominators."""
    r, g, b, n = (raw[i].astype(np.float64) for i in range(4))
    return np.stack([(2 * g - r - b) / (r + g + b + 1e-6), (n - r) / (n + r + 1e-6)])


@pytest.mark.integration
def test_every_network_input_of_a_run_is_the_bands_then_their_indices(trained, tmp_path):
    """The network's own input tensors during ``run_job`` (a forward hook on the worker's model): channels 5 and 6
    are ExG and NDVI of the pixels in channels 1-4, by hand, standardised with the sidecar's statistics."""
    from distributed import Client, LocalCluster

    files, ck = trained
    meta = read_meta(ck)
    clear_model_cache()
    model, _ = get_worker_model(ck, "cpu")  # the in-process worker finds this model in the cache
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with (LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
              Client(cluster) as client):
            run_job(parse_job(_job(files.image, ck, tmp_path / "out")), client=client, show_progress=False)
    finally:
        hook.remove()
        clear_model_cache()
    x = torch.cat(seen).numpy().astype(np.float64)
    assert x.shape[1:] == (6, 64, 64) and len(x) >= 4 and np.isfinite(x).all()
    mean, std = np.array(meta.band_mean)[:, None, None], np.array(meta.band_std)[:, None, None]
    for tile in x:
        raw = tile[:4] * std + mean  # the tile's own pixels, as read
        want = (_by_hand(raw) - np.array([c.mean for c in meta.index_channels])[:, None, None]) \
            / np.array([c.std for c in meta.index_channels])[:, None, None]
        np.testing.assert_allclose(tile[4:], want, atol=2e-4)
    # and the labels are those of one whole-scene prediction
    model, meta = load_checkpoint(ck)
    with rasterio.open(files.image) as ds:
        data = ds.read().astype(np.float32)
    whole = predict_chunk(model, meta, data, np.ones((SIZE, SIZE), bool), device="cpu")
    with rasterio.open(tmp_path / "out" / "labels.zarr") as ds:
        assert (ds.read(1) == whole).mean() >= 0.999


@pytest.fixture()
def rgb(trained, tmp_path):
    """The scene's red, green and blue bands alone (an RGB orthophoto of the same field)."""
    files, _ = trained
    with rasterio.open(files.image) as ds:
        data, transform, crs = ds.read([1, 2, 3]), ds.transform, ds.crs
    path = tmp_path / "rgb.tif"
    write_raster(path, data, transform=transform, crs=crs.to_string(), descriptions=("red", "green", "blue"))
    return path


def test_an_image_without_nir_is_refused_before_the_cluster_and_any_output(trained, rgb, tmp_path, monkeypatch):
    _, ck = trained
    started: list[object] = []
    monkeypatch.setattr("geoseg.run.workflow.connect", lambda *a, **k: started.append(a))
    out = tmp_path / "out"
    with pytest.raises(ModelInputError, match=r"index channel 'ndvi' needs nir, red: no band has the role 'nir'"):
        run_job(parse_job(_job(rgb, ck, out)), show_progress=False)
    assert started == [] and not out.exists()


def test_cli_run_refuses_an_image_without_nir_in_one_line(trained, rgb, tmp_path):
    _, ck = trained
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(json.loads(json.dumps(_job(rgb, ck, tmp_path / "out")))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job), "-q"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("geoseg: error: ") and "'ndvi'" in lines[0] and "'nir'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_bands_without_roles_or_in_another_order_are_refused(trained, tmp_path):
    """Four bands but no role to tell them apart, or the roles at other positions than in training."""
    files, ck = trained
    with rasterio.open(files.image) as ds:
        data, transform, crs = ds.read(), ds.transform, ds.crs
        profile = {**ds.profile, "photometric": "minisblack"}  # grey bands: no colour interpretation says red
    with rasterio.open(tmp_path / "plain.tif", "w", **profile) as out:
        out.write(data)
    with pytest.raises(ModelInputError, match=r"index channel 'exg' needs red, green, blue: no band has the role 'red'"):
        run_job(parse_job(_job(tmp_path / "plain.tif", ck, tmp_path / "o1")), show_progress=False)
    write_raster(tmp_path / "swapped.tif", data[[3, 0, 1, 2]], transform=transform, crs=crs.to_string(),
                 descriptions=("nir", "red", "green", "blue"))
    with pytest.raises(ModelInputError, match=r"read 'red' from band 1 \(red\) in training, this image has it in band 2"):
        run_job(parse_job(_job(tmp_path / "swapped.tif", ck, tmp_path / "o2")), show_progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
