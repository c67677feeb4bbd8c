"""Chaos (slow, outside the default suite): random workers are killed again and again during a long run.

The job must still finish, with labels and polygons equal to an undisturbed run. Run with
``pytest -m slow tests/run/test_chaos.py``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pyogrio
import pytest

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene
from tests.run.jobs import chunk_markers, kmeans_job_dict, label_bytes

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KILLS = 6


def _polygons(out) -> list[tuple]:
    df = pyogrio.read_dataframe(out / "polygons.gpkg", layer="polygons")
    return sorted(zip(df.class_id, df.area_m2.round(6), df.geometry.to_wkb()))


def test_random_worker_kills_during_a_long_run(tmp_path):
    from distributed import Client, LocalCluster

    scene, _ = blocky_scene(tmp_path, height=4000, width=4000)
    job = kmeans_job_dict(scene, tmp_path / "ref")
    job["vectorize"] = {"enabled": True}
    run_job(parse_job(job), show_progress=False)

    out = tmp_path / "out"
    rng = random.Random(7)
    kills: list[int] = []
    with LocalCluster(n_workers=3, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster) as client:
        errors: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                run_job(parse_job({**job, "output": str(out)}), client=client, show_progress=False)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=run)
        thread.start()
        while chunk_markers(out) < 5 and not done.is_set():
            time.sleep(0.05)
        while len(kills) < KILLS and not done.is_set():
            pids = list(client.run(os.getpid).values())
            if not pids:  # every worker is restarting
                time.sleep(0.5)
                continue
            victim = rng.choice(pids)
            os.kill(victim, signal.SIGKILL)  # the nanny starts a new worker
            kills.append(victim)
            time.sleep(rng.uniform(1.0, 3.0))
        thread.join(timeout=900)
        assert not errors, errors
    assert len(kills) >= 3, "the run ended before the chaos could start; make the scene larger"
    assert label_bytes(out) == label_bytes(tmp_path / "ref")
    assert _polygons(out) == _polygons(tmp_path / "ref")
