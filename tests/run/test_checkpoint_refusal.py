"""A truncated checkpoint is refused on the client before any work (issue 14, finding 9).

Before: the sidecar parsed, so the run claimed its output folder, started the cluster and failed
on the workers after about 15 s with a traceback and a partial store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from geoseg.errors import CheckpointError
from geoseg.methods.checkpoint import save_checkpoint
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.synthetic import make_scene
from tests.fixtures import tiny_meta, tiny_model


@pytest.fixture()
def truncated(tmp_path):
    files = make_scene("cropweed", tmp_path / "scene", width=128, height=128, seed=3, block=128)
    meta = tiny_meta(tile_size=64, tile_overlap=16)
    weights, _ = save_checkpoint(tiny_model(meta), meta, tmp_path / "ck")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 2 // 3])  # an interrupted copy
    job = {"name": "cut", "inputs": [str(files.image)], "output": str(tmp_path / "out"), "chunk_size": 128,
           "method": {"kind": "deeplab", "checkpoint": str(tmp_path / "ck"), "device": "cpu"},
           "vectorize": {"enabled": False}}
    return job, tmp_path / "out"


def test_truncated_checkpoint_is_refused_in_under_a_second_before_any_output(truncated):
    job, out = truncated
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"checkpoint weights .*ck\.safetensors are truncated"):
        run_job(parse_job(job), show_progress=False)  # no client: the refusal comes before any cluster
    assert time.perf_counter() - t0 < 1.0
    assert not out.exists()


def test_cli_refuses_a_truncated_checkpoint_in_one_line(truncated, tmp_path):
    job, out = truncated
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(job))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(path), "-q"], check=False, capture_output=True,
                          text=True, env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("geoseg: error: checkpoint weights"), lines
    assert not out.exists()
