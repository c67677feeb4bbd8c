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
