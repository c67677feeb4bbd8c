"""The k-means fit runs on a worker and gives the model a fit on the client gives."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import get_task_stream

from geoseg.io.scene import open_scene
from geoseg.methods.features import FeatureSpec
from geoseg.methods.kmeans import fit_kmeans
from geoseg.methods.sampling import SAMPLE_CHUNK, sampling_rate
from geoseg.run.jobspec import KMeansConfig
from geoseg.run.labelling import sample_task
from geoseg.run.methods.kmeans import fit_kmeans_on_cluster
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def test_fit_on_worker_equals_fit_on_client(tmp_path, dask_client):
    path, _ = blocky_scene(tmp_path, height=300, width=340)
    scene = open_scene([str(path)])
    grid = scene.chunk_grid(SAMPLE_CHUNK)  # the sample's grid, whatever the job's chunk_size
    cfg = KMeansConfig(kind="kmeans", n_clusters=4, sample_size=6000, seed=7, features={"indices": ["ndvi"]})
    with get_task_stream(dask_client) as stream:
        model, feats = fit_kmeans_on_cluster(dask_client, scene, cfg, show_progress=False)
    assert any("fit_task" in str(t["key"]) for t in stream.data)  # the fit ran on a worker

    feats_here = FeatureSpec(bands=None, indices=("ndvi",)).resolve(scene.band_names)
    rate = sampling_rate(cfg.sample_size, grid.height * grid.width)
    sample = np.concatenate([sample_task(scene, feats_here, w, rate, cfg.seed) for w in grid.windows()])
    expected = fit_kmeans(sample, 4, 7, feats_here.names, n_init=cfg.n_init)  # in this process
    assert feats.names == feats_here.names
    np.testing.assert_allclose(model.centroids, expected.centroids, rtol=1e-6)
    np.testing.assert_allclose(model.mean, expected.mean)
    assert model.inertia == pytest.approx(expected.inertia, rel=1e-9)


def test_no_worker_imports_scikit_learn_and_the_waiting_workers_load_the_compiled_loops(tmp_path):
    """The fit needs no scikit-learn (its import cost each fitting worker ~1 CPU s, 1,300 modules), it
    runs on the chosen worker, and the workers that wait for it load the fit's and the label stage's
    compiled loops and zarr meanwhile (fresh workers: the shared test cluster may have loaded them)."""
    import sys
    import time

    from distributed import Client

    from geoseg.run.cluster import describe, start_local_cluster
    from geoseg.run.methods.kmeans import fit_worker_of

    def loaded(wait_s: float) -> dict[str, bool]:
        from geoseg._kernels.kmeans_loops import kmeans_labels
        from geoseg._kernels.lloyd_loops import lloyd_blocks

        deadline = time.monotonic() + wait_s
        while not (kmeans_labels.signatures and lloyd_blocks.signatures) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"sklearn": "sklearn" in sys.modules, "zarr": "zarr" in sys.modules,
                "label_loop": bool(kmeans_labels.signatures), "fit_loop": bool(lloyd_blocks.signatures)}

    path, _ = blocky_scene(tmp_path, height=200, width=200)
    scene = open_scene([str(path)])
    cfg = KMeansConfig(kind="kmeans", n_clusters=3, sample_size=2000, seed=1, features={"indices": ["ndvi"]})
    with start_local_cluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard=False) as cluster, \
            Client(cluster) as client:
        fresh = client.run(loaded, 0)
        assert not any(v for state in fresh.values() for v in state.values())  # nothing loaded by itself
        fit_worker = fit_worker_of(describe(client, "given").workers)
        with get_task_stream(client) as stream:
            fit_kmeans_on_cluster(client, scene, cfg, show_progress=False)
        state = client.run(loaded, 30)
    assert [t["worker"] for t in stream.data if "fit_task" in str(t["key"])] == [fit_worker]
    (other,) = set(state) - {fit_worker}
    assert not state[fit_worker]["sklearn"] and not state[other]["sklearn"]
    assert state[fit_worker]["fit_loop"] and state[fit_worker]["label_loop"]
    assert state[other]["zarr"] and state[other]["label_loop"] and state[other]["fit_loop"]


def test_sample_is_drawn_in_groups_of_chunks_and_equals_the_chunk_by_chunk_sample(tmp_path, dask_client):
    from geoseg.run.labelling import draw_sample

    path, _ = blocky_scene(tmp_path, height=300, width=340)
    scene = open_scene([str(path)])
    grid = scene.chunk_grid(64)  # 30 chunks
    feats = FeatureSpec(bands=None, indices=("ndvi",)).resolve(scene.band_names)
    with get_task_stream(dask_client) as stream:
        sample = draw_sample(dask_client, scene, grid, feats, 5000, 3, show_progress=False)
    tasks = [t for t in stream.data if "sample_group_task" in str(t["key"])]
    assert 1 < len(tasks) < grid.n_chunks
    rate = sampling_rate(5000, grid.height * grid.width)
    expected = np.concatenate([sample_task(scene.for_window(w), feats, w, rate, 3) for w in grid.windows()])
    np.testing.assert_array_equal(sample, expected)


def test_a_failing_warm_up_is_only_logged(caplog):
    import logging
    import threading

    from geoseg.run.labelling import warm_in_background

    raised: list[BaseException] = []
    old_hook, threading.excepthook = threading.excepthook, lambda args: raised.append(args.exc_value)
    try:
        with caplog.at_level(logging.DEBUG, logger="geoseg.run.labelling"):
            warm_in_background(("geoseg_no_such_module",))
            for t in threading.enumerate():
                if t.name.startswith("geoseg warm-up"):
                    t.join(10)
    finally:
        threading.excepthook = old_hook
    assert raised == []
    assert "geoseg_no_such_module" in caplog.text


def test_a_scene_of_one_chunk_draws_a_sample_in_proportion_to_its_valid_pixels_whatever_the_seed(tmp_path):
    """One 2048² chunk used to read a random quarter of its blocks: with two thirds of the scene nodata the
    sample's size (and class mix) swung with the seed (4,824 or 8,576 pixels where 6,700 were due)."""
    from tests.fixtures import SPECTRA, blocky_classes, write_raster

    classes = blocky_classes(200, 200)
    img = SPECTRA[classes].transpose(2, 0, 1).astype("uint16")
    img[:, :, :133] = 0  # nodata
    scene = open_scene([str(write_raster(tmp_path / "s.tif", img, nodata=0,
                                         descriptions=("blue", "green", "red", "nir")))])
    feats = FeatureSpec(bands=None, indices=()).resolve(scene.band_names)
    grid = scene.chunk_grid(2048)
    assert grid.n_chunks == 1 and scene.block == (128, 128)  # one chunk of four blocks
    rate = sampling_rate(20_000, grid.height * grid.width)
    due = rate * int((img[0] != 0).sum())
    for seed in range(6):
        drawn = sum(len(sample_task(scene, feats, w, rate, seed)) for w in grid.windows())
        assert drawn == pytest.approx(due, rel=0.02), seed


def test_tiny_samples_are_fitted_on_one_thread_others_on_every_core():
    import os

    from geoseg.run.methods.kmeans import PARALLEL_FIT_PIXELS, fit_threads

    assert fit_threads(PARALLEL_FIT_PIXELS - 1) == 1
    assert fit_threads(PARALLEL_FIT_PIXELS) == len(os.sched_getaffinity(0))
