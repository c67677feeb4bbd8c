"""The k-means fit runs on a worker and gives the model a fit on the client gives."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import get_task_stream

from geoseg.io.scene import open_scene
from geoseg.methods.features import FeatureSpec
from geoseg.methods.kmeans import fit_kmeans
from geoseg.methods.sampling import sampling_rate
from geoseg.run.jobspec import KMeansConfig
from geoseg.run.labelling import fit_kmeans_on_cluster, sample_task
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def test_fit_on_worker_equals_fit_on_client(tmp_path, dask_client):
    path, _ = blocky_scene(tmp_path, height=300, width=340)
    scene = open_scene([str(path)])
    grid = scene.chunk_grid(128)
    cfg = KMeansConfig(kind="kmeans", n_clusters=4, sample_size=6000, seed=7, features={"indices": ["ndvi"]})
    with get_task_stream(dask_client) as stream:
        model, feats = fit_kmeans_on_cluster(dask_client, scene, grid, cfg, show_progress=False)
    assert any("fit_task" in str(t["key"]) for t in stream.data)  # the fit ran on a worker

    feats_here = FeatureSpec(bands=None, indices=("ndvi",)).resolve(scene.band_names)
    rate = sampling_rate(cfg.sample_size, grid.height * grid.width)
    sample = np.concatenate([sample_task(scene, feats_here, w, rate, cfg.seed) for w in grid.windows()])
    expected = fit_kmeans(sample, 4, 7, feats_here.names, n_init=cfg.n_init)  # in this process
    assert feats.names == feats_here.names
    np.testing.assert_allclose(model.centroids, expected.centroids, rtol=1e-6)
    np.testing.assert_allclose(model.mean, expected.mean)
    assert model.inertia == pytest.approx(expected.inertia, rel=1e-9)


def test_scikit_learn_imported_on_every_worker_while_sampling(tmp_path):
    """The fit's ~1 s import of scikit-learn is started on all workers before the sample is drawn,
    not only on the one worker the fit lands on once the sample is complete (fresh workers: the
    shared test cluster may have imported it already)."""
    import sys
    import time

    from distributed import Client

    from geoseg.run.cluster import start_local_cluster

    def imported(wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while "sklearn.cluster" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.05)
        return "sklearn.cluster" in sys.modules

    path, _ = blocky_scene(tmp_path, height=200, width=200)
    scene = open_scene([str(path)])
    cfg = KMeansConfig(kind="kmeans", n_clusters=3, sample_size=2000, seed=1, features={"indices": []})
    with start_local_cluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard=False) as cluster, \
            Client(cluster) as client:
        assert not any(client.run(imported, 0).values())  # fresh workers do not import it themselves
        fit_kmeans_on_cluster(client, scene, scene.chunk_grid(128), cfg, show_progress=False)
        found = client.run(imported, 30)
    assert len(found) == 2 and all(found.values())


def test_small_samples_are_fitted_on_one_thread_large_ones_on_every_core():
    import os

    from geoseg.run.labelling import PARALLEL_FIT_PIXELS, fit_threads

    assert fit_threads(200_000) == 1
    assert fit_threads(PARALLEL_FIT_PIXELS) == len(os.sched_getaffinity(0))
