"""`geoseg monitor` starts one cluster for all its periods, and none when nothing is new."""

from __future__ import annotations

import json
import shutil

import pytest

import geoseg.run.cluster as cluster_module
from geoseg.run.jobspec import parse_job
from geoseg.run.monitor import run_monitor
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def test_monitor_starts_the_cluster_once(tmp_path, monkeypatch):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i, name in enumerate(("S2_2024-05-01.tif", "S2_2024-06-01.tif", "S2_2024-07-01.tif")):
        path, _ = blocky_scene(tmp_path, height=160, width=170, seed=i)
        shutil.move(path, scenes / name)
    job = parse_job({
        "name": "mon", "inputs": [str(scenes / "S2_*.tif")], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "features": {"indices": ["ndvi"]}},
        "vectorize": {"enabled": False}, "cluster": {"n_workers": 1, "memory_limit": "2GiB"},
    })
    starts: list[str | None] = []
    real_connect = cluster_module.connect

    def counting_connect(scheduler=None, *args, **kwargs):
        starts.append(scheduler)
        return real_connect(scheduler, *args, **kwargs)

    monkeypatch.setattr(cluster_module, "connect", counting_connect)
    summary = run_monitor(job)
    assert summary.exit_code == 0 and len(summary.processed) == 3 and len(summary.changes) == 2
    assert len(starts) == 1
    addresses = {json.loads((tmp_path / "out" / p / "run.json").read_text())["cluster"]["scheduler"]
                 for p in ("2024-05-01", "2024-06-01", "2024-07-01")}
    assert len(addresses) == 1  # every period ran on the same cluster
    again = run_monitor(job)
    assert again.processed == [] and len(again.skipped) == 3 and len(starts) == 1  # nothing new: no cluster
