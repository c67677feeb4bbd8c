"""run.json follows a run stage by stage; `geoseg -q run --json` prints one JSON document and no warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geoseg.run import runrecord
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene
from tests.run.jobs import kmeans_job_dict

pytestmark = pytest.mark.integration


def test_run_json_is_rewritten_at_every_stage(tmp_path, dask_client, monkeypatch):
    scene, _ = blocky_scene(tmp_path)
    seen: list[dict] = []
    write = runrecord.write_json_atomic

    def spy(path, data, *args, **kwargs):  # every version written, as written
        seen.append(json.loads(json.dumps(data, default=str)))
        return write(path, data, *args, **kwargs)

    monkeypatch.setattr(runrecord, "write_json_atomic", spy)
    run_job(parse_job(kmeans_job_dict(scene, tmp_path / "out")), client=dask_client, show_progress=False)
    running = [d for d in seen if d["outcome"] == "running"]
    assert [d["stage"] for d in running if d.get("stage")] == ["fit", "predict"]
    assert running[-1]["stage_seconds"].keys() == {"fit", "predict"}  # both recorded before the end
    assert all("cluster" in d for d in running[1:]) and running[-1]["chunks_total"] == 9
    assert seen[-1]["outcome"] == "complete" and seen[-1].get("stage") is None


def test_quiet_json_run_prints_only_the_summary(tmp_path):
    scene, _ = blocky_scene(tmp_path)
    job = kmeans_job_dict(scene, tmp_path / "out") | {"cluster": {"n_workers": 1, "memory_limit": "1GiB"}}
    (tmp_path / "job.yaml").write_text(json.dumps(job))  # JSON is YAML
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "-q", "run", str(tmp_path / "job.yaml"), "--json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # nothing else on stdout
    assert summary["outputs"]["labels"] == str(tmp_path / "out" / "labels.zarr")
    assert set(summary["stage_seconds"]) == {"fit", "predict"} and sum(map(int, summary["label_counts"].values())) > 0
    assert "dashboard" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
