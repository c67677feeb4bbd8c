"""The output folder: one run at a time (lock), stale partial files removed, file-system errors as user errors."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geoseg.cli import main
from geoseg.errors import OutputError, from_os_error
from geoseg.run.jobspec import parse_job
from geoseg.run.lock import LOCK_FILE, OutputLock
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene

HOLD = (
    "import sys, time; from geoseg.run.lock import OutputLock; OutputLock.acquire(sys.argv[1]);"
    " print('held', flush=True); time.sleep(60)"
)


def _job(tmp_path: Path, out: Path) -> dict:
    scene, _ = blocky_scene(tmp_path, height=200, width=200)
    return {"name": "lock", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
            "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 1000}, "vectorize": {"enabled": False}}


def _job_file(tmp_path: Path, out: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_job(tmp_path, out)))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = main(["run", str(_job_file(tmp_path, out))])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and err.startswith("geoseg: error: ")
        assert f"in use by another geoseg run: pid {holder.pid} on host {socket.gethostname()}" in err
        assert not (out / "run.json").exists()  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.integration
def test_a_stale_lock_of_a_dead_process_is_taken_over_and_stale_temporaries_are_removed(tmp_path, dask_client):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    stale_gpkg = out / ".polygons.4242-0123456789.geoseg-tmp.gpkg"
    stale_gpkg.write_bytes(b"\0" * 4096)
    Path(f"{stale_gpkg}-journal").write_bytes(b"\0")
    legacy = [out / ".polygons.0123456789.partial.gpkg", out / ".labels.0123456789.staging.tif",
              out / ".metrics.tmp-4242.csv", out / ".run.json.tmp"]
    for p in legacy:
        p.write_bytes(b"\0" * 1024)
    stale_dir = out / ".labels.4242-abcdefabcd.geoseg-tmp.zarr"
    stale_dir.mkdir()
    (stale_dir / "chunk").write_bytes(b"x")
    run_job(parse_job(_job(tmp_path, out)), client=dask_client, show_progress=False)
    assert json.loads((out / "run.json").read_text())["outcome"] == "complete"
    assert not stale_gpkg.exists() and not Path(f"{stale_gpkg}-journal").exists() and not stale_dir.exists()
    assert not [p for p in legacy if p.exists()]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_a_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "t"}))
    with pytest.raises(OutputError, match=f"another host: pid 1 on host elsewhere.example.*delete {tmp_path}"):
        OutputLock.acquire(tmp_path)


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with OutputLock.acquire(tmp_path), pytest.raises(OutputError, match=f"pid {os.getpid()}"):
        OutputLock.acquire(tmp_path)
    OutputLock.acquire(tmp_path).release()  # free again


def test_output_under_a_file_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    rc = main(["run", str(_job_file(tmp_path, blocker / "out"))])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(f"geoseg: error: {blocker}")
    assert "is a file, not a folder" in err


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a read-only /sys (Linux)")
def test_output_where_writing_is_not_permitted_is_a_user_error(tmp_path, capsys):
    rc = main(["run", str(_job_file(tmp_path, Path("/sys/geoseg-test-out")))])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "/sys/geoseg-test-out" in err
    assert "permission denied" in err or "not permitted" in err or "read-only" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_says_what_to_do():
    with pytest.raises(OSError) as info, open("/dev/full", "w") as f:
        f.write("x" * 10)
        f.flush()
    assert info.value.errno == errno.ENOSPC
    info.value.filename = "/dev/full"
    error = from_os_error(info.value)
    assert isinstance(error, OutputError) and error.exit_code == 2
    assert str(error).startswith("/dev/full: no space left") and "rerun to resume" in str(error)


@pytest.mark.integration
def test_a_file_system_error_during_the_run_is_a_user_error_and_recorded(tmp_path, dask_client):
    out = tmp_path / "out"
    job = parse_job(_job(tmp_path, out))
    run_job(job, client=dask_client, show_progress=False)
    (out / "labels.zarr.partial").write_text("a file where the partial store goes")  # rmtree/mkdir there fail
    with pytest.raises(OutputError, match=r"labels\.zarr\.partial"):
        run_job(job, client=dask_client, show_progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "failed" and "labels.zarr.partial" in record["error"]
    assert not (out / LOCK_FILE).exists()
