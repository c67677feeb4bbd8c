"""Reliability: killed jobs resume to identical output, worker loss is survived, corrupt bytes never crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene
from tests.run.jobs import (
    chunk_markers,
    kmeans_job_dict,
    label_bytes,
    landcover_job_dict,
    polygon_set,
    polygon_summary,
    wait_for_markers,
)

pytestmark = pytest.mark.integration


def _reference_run_and_cli(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """An uninterrupted reference run of a 1500² k-means job, and the `geoseg run` command of the same
    job into another folder (to be interrupted): ``(reference output, output, command)``."""
    scene, _ = blocky_scene(tmp_path, height=1500, width=1500)
    ref_out = tmp_path / "ref"
    run_job(parse_job(kmeans_job_dict(scene, ref_out)), show_progress=False)
    out = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(kmeans_job_dict(scene, out)))
    return ref_out, out, [sys.executable, "-m", "geoseg.cli", "run", "-q", str(job_file)]


def test_sigkill_of_whole_job_then_rerun_gives_identical_output(tmp_path):
    ref_out, out, cmd = _reference_run_and_cli(tmp_path)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_markers(out, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = chunk_markers(out)
    assert done_before < 144, "the job finished before it could be killed"
    assert not (out / "labels.zarr").exists()  # nothing looks finished
    assert json.loads((out / "run.json").read_text())["outcome"] == "running"

    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete"
    assert record["chunks_reused"] >= done_before
    assert label_bytes(out) == label_bytes(ref_out)


def test_killing_a_worker_mid_run_does_not_change_output(tmp_path):
    from distributed import Client, LocalCluster

    scene, _ = blocky_scene(tmp_path, height=1500, width=1500)
    run_job(parse_job(kmeans_job_dict(scene, tmp_path / "ref")), show_progress=False)

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster) as client:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                run_job(parse_job(kmeans_job_dict(scene, out)), client=client, show_progress=False)
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for_markers(out, 2)
        victim = min(client.run(os.getpid).values())
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=600)
        assert not errors, errors
    assert label_bytes(out) == label_bytes(tmp_path / "ref")


FUZZ_SCRIPT = r"""
import sys, numpy as np
from pathlib import Path
from geoseg.errors import GeosegError
from geoseg.io.scene import open_scene, read_window
src = Path(sys.argv[1]).read_bytes()
rng = np.random.default_rng(int(sys.argv[2]))
for i in range(int(sys.argv[3])):
    data = bytearray(src)
    mode = i % 3
    if mode == 0:  # flip bytes anywhere
        for pos in rng.integers(0, len(data), 8):
            data[pos] = int(rng.integers(0, 256))
    elif mode == 1:  # damage the header and IFD
        for pos in rng.integers(0, min(len(data), 600), 4):
            data[pos] = int(rng.integers(0, 256))
    else:  # truncate
        data = data[: int(rng.integers(8, len(data)))]
    path = Path(sys.argv[4]) / f"m{i}.tif"
    path.write_bytes(bytes(data))
    try:
        scene = open_scene(str(path))
        for w in scene.chunk_grid(128).windows():
            read_window(scene, w)
        print(i, "ok", flush=True)
    except GeosegError as exc:
        print(i, "geoseg-error", flush=True)
    except Exception as exc:
        print(i, "OTHER", type(exc).__name__, exc, flush=True)
"""


def test_mutated_geotiff_bytes_give_a_result_or_a_clean_error(tmp_path):
    scene, _ = blocky_scene(tmp_path, height=200, width=260)
    n = 60
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, str(scene), "0", str(n), str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "CPL_LOG": os.devnull},
    )
    assert proc.returncode == 0, f"reader crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    lines = [line for line in proc.stdout.splitlines() if line and line.split()[0].isdigit()]
    assert len(lines) == n
    others = [line for line in lines if "OTHER" in line]
    assert not others, others
    assert any("geoseg-error" in line for line in lines)


@pytest.mark.parametrize("sig, to_group, code", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
                         ids=["sigterm-to-the-process", "sigint-to-the-group"])
def test_a_stop_signal_records_interrupted_prints_one_line_and_the_rerun_completes(tmp_path, sig, to_group, code):
    """SIGTERM (Kubernetes, Slurm) or Ctrl-C (SIGINT to the terminal's whole process group, workers too)."""
    ref_out, out, cmd = _reference_run_and_cli(tmp_path)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_markers(out, 3)
        os.killpg(proc.pid, sig) if to_group else os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [f"geoseg: interrupted ({signal.Signals(sig).name}); rerun the same command to resume"], stderr
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "interrupted"
    assert not (out / "labels.zarr").exists()
    assert not (out / ".geoseg.lock").exists()

    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete" and record["chunks_reused"] >= 3
    assert label_bytes(out) == label_bytes(ref_out)


def _part_files(out: Path) -> int:
    """Chunk polygons the workers have written to vectorise's hidden part folder."""
    return sum(len(list(d.iterdir())) for d in out.glob(".polygons-parts.*") if d.is_dir())


def _gpkg_bytes(out: Path) -> int:
    """Size of the hidden GeoPackage being written beside ``polygons.gpkg``."""
    total = 0
    for p in out.glob(".polygons.*.geoseg-tmp.gpkg*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # SQLite's journal comes and goes between glob and stat
            pass
    return total


# stage: (the `_stage` name it runs in, when it is under way, what it would have finished)
KILL_POINTS = {
    "sampling": ("fit", lambda out: True, "model.json"),
    "labelling": ("predict", lambda out: chunk_markers(out) >= 2, "labels.zarr"),
    "evaluate": ("evaluate", lambda out: True, "metrics.csv"),
    "vectorize-parts": ("vectorize", lambda out: _part_files(out) >= 1, "polygons.gpkg"),
    "gpkg-writing": ("vectorize", lambda out: _gpkg_bytes(out) >= 4 << 20, "polygons.gpkg"),
}


def _cli_run(job: dict, folder: Path) -> list[str]:
    job_file = folder / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    return [sys.executable, "-m", "geoseg.cli", "run", str(job_file)]


def _outputs(out: Path) -> dict:
    return {"labels": label_bytes(out), "polygons": polygon_summary(out / "polygons.gpkg"),
            "polygon_set": polygon_set(out / "polygons.gpkg"), "metrics": pd.read_csv(out / "metrics.csv")}


@pytest.fixture(scope="module")
def landcover_reference(tmp_path_factory):
    """A 1024² land-cover scene (64 chunks) and the outputs of one uninterrupted `geoseg run` of its job."""
    from geoseg.samples.synthetic import make_scene

    root = tmp_path_factory.mktemp("killref")
    files = make_scene("landcover", root / "data", width=1024, height=1024, seed=3, block=128)
    ref = subprocess.run(_cli_run(landcover_job_dict(files, root / "out"), root) + ["-q"],
                         check=False, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    return files, _outputs(root / "out")


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_of_whole_job_in_each_stage_then_rerun_gives_identical_output(tmp_path, landcover_reference, stage):
    """SIGKILL of the job's process group (client and workers) while ``stage`` runs; the rerun equals a clean run."""
    files, expected = landcover_reference
    log_stage, under_way, unfinished = KILL_POINTS[stage]
    out = tmp_path / "out"
    cmd = _cli_run(landcover_job_dict(files, out), tmp_path)
    proc = subprocess.Popen(cmd + ["-v"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        t0 = time.time()
        while not (any(f"stage {log_stage} ..." in line for line in list(lines)) and under_way(out)):
            assert proc.poll() is None, f"the job ended before {stage} could be killed"
            assert time.time() - t0 < 300, f"{stage} never started"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
    assert not any(f"stage {log_stage} done" in line for line in lines), f"{stage} finished before the kill"
    assert not (out / unfinished).exists()
    assert json.loads((out / "run.json").read_text())["outcome"] == "running"

    rerun = subprocess.run(cmd + ["-q"], check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "run.json").read_text())["outcome"] == "complete"
    got = _outputs(out)
    assert got["labels"] == expected["labels"]
    assert got["polygons"].keys() == expected["polygons"].keys()
    for cls, (count, area) in expected["polygons"].items():
        assert got["polygons"][cls][0] == count
        assert got["polygons"][cls][1] == pytest.approx(area, rel=1e-12)
    assert got["polygon_set"] == expected["polygon_set"]
    pd.testing.assert_frame_equal(got["metrics"], expected["metrics"], check_exact=True)
    leftovers = [p.name for p in out.iterdir() if ".geoseg-tmp" in p.name or p.name.endswith(".partial")]
    assert not leftovers, leftovers  # the killed run's hidden partial files are gone
