"""A fuzz round through the CLI (slow): mutated GeoTIFFs into ``geoseg run`` on a real cluster.

Every outcome is exit 0, or exit 2 with one line ``geoseg: error: ...``; nothing is an
"unexpected error", nothing hangs. Run with ``pytest -m slow tests/run/test_fuzz_cli.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.fixtures import blocky_scene

pytestmark = [pytest.mark.slow, pytest.mark.integration]

N_CASES = 24


def _mutate(src: bytes, i: int, rng: np.random.Generator) -> bytes:
    data = bytearray(src)
    mode = i % 4
    if mode == 0:  # flip bytes anywhere
        for pos in rng.integers(0, len(data), 8):
            data[pos] = int(rng.integers(0, 256))
    elif mode == 1:  # damage the header and first IFD
        for pos in rng.integers(0, min(len(data), 600), 4):
            data[pos] = int(rng.integers(0, 256))
    elif mode == 2:  # truncate
        data = data[: int(rng.integers(8, len(data)))]
    else:  # overwrite a run of tile bytes
        start = int(rng.integers(0, len(data) - 2000))
        data[start:start + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return bytes(data)


def test_mutated_geotiffs_through_geoseg_run(tmp_path, dask_client):
    scene, _ = blocky_scene(tmp_path, height=256, width=256)
    src = scene.read_bytes()
    rng = np.random.default_rng(14)
    outcomes: list[tuple[int, int, str]] = []
    for i in range(N_CASES):
        image = tmp_path / f"m{i}.tif"
        image.write_bytes(_mutate(src, i, rng))
        job = tmp_path / f"job{i}.yaml"
        job.write_text(yaml.safe_dump({
            "name": f"fuzz{i}", "inputs": [str(image)], "output": str(tmp_path / f"out{i}"), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 1000}, "vectorize": {"enabled": False},
        }))
        proc = subprocess.run(
            [sys.executable, "-m", "geoseg.cli", "run", "-q", str(job), "--scheduler", dask_client.scheduler.address],
            check=False, capture_output=True, text=True, timeout=60, env={**os.environ, "CPL_LOG": os.devnull},
        )
        outcomes.append((i, proc.returncode, proc.stderr))
    bad = [(i, rc, err[-600:]) for i, rc, err in outcomes
           if not (rc == 0 or (rc == 2 and err.count("\n") == 1 and err.startswith("geoseg: error: ")))]
    assert not bad, bad
    assert {rc for _, rc, _ in outcomes} == {0, 2}  # the round had both outcomes: it tested something
    assert all(not Path(tmp_path / f"out{i}" / "labels.zarr").exists() for i, rc, _ in outcomes if rc != 0)
