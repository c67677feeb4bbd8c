"""One run at a time per output prefix on object storage (a real S3 server on loopback: moto).

The lock object is created with ``If-None-Match: *`` and kept alive by a heartbeat; these tests
check what a user relies on: a second run is refused naming the first while its heartbeat runs,
a stale lock is taken over with a warning, the lock is gone after a failing run, the local
scratch is emptied, and what a killed run left on the store is removed by the next run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from geoseg.cli import main
from geoseg.errors import OutputError, OutputInUseError
from geoseg.io import storage
from geoseg.run import storelock
from geoseg.run.jobspec import parse_job
from geoseg.run.lock import OutputLock, claim_output
from geoseg.run.storelock import StoreClaim, StoreLock
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene
from tests.s3server import s3_bucket, s3_env  # noqa: F401 - fixtures

HOLD = (
    "import sys, time; from geoseg.run.lock import claim_output; claim_output(sys.argv[1]);"
    " print('held', flush=True); time.sleep(120)"
)


def _job(tmp_path: Path, out: str, **over) -> dict:
    scene, _ = blocky_scene(tmp_path, height=200, width=200)
    job = {"name": "lock", "inputs": [str(scene)], "output": out, "chunk_size": 128,
           "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 1000}, "vectorize": {"enabled": False}}
    job.update(over)
    return job


@pytest.fixture()
def s3_client(s3_env):  # noqa: F811
    """A local cluster started after the S3 server, so its workers inherit the endpoint and keys
    (the session's ``dask_client`` may have been started before ``s3_env`` set them)."""
    from distributed import Client

    from geoseg.run.cluster import start_local_cluster

    with start_local_cluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard=False) as cluster, \
            Client(cluster) as client:
        yield client


def _lock_object(url: str) -> dict | None:
    text = storage.read_text(storage.join(url, storage.LOCK_OBJECT))
    return None if text is None else json.loads(text)


def _keys(url: str) -> list[str]:
    fs, p = storage.filesystem(url)
    fs.invalidate_cache()
    return sorted(k[len(p) + 1:] for k in fs.find(p))


def _unfinished_uploads(url: str) -> list[str]:
    fs, p = storage.filesystem(url)
    bucket, key, _ = fs.split_path(p)
    return [u["Key"] for u in fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key + "/").get("Uploads", [])]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_is_refused_while_the_first_keeps_its_heartbeat(tmp_path, s3_bucket, capsys, monkeypatch):  # noqa: F811
    url = storage.join(s3_bucket, "held")
    monkeypatch.setenv("GEOSEG_LOCK_TIMEOUT", "4")  # the holder beats every second
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        fs, key = storage.filesystem(storage.join(url, storage.LOCK_OBJECT))
        first = fs.info(key, refresh=True)["LastModified"]
        time.sleep(5)  # longer than the timeout: only the heartbeat keeps the lock live
        assert fs.info(key, refresh=True)["LastModified"] > first
        job_file = tmp_path / "job.yaml"
        job_file.write_text(yaml.safe_dump(_job(tmp_path, url)))
        rc = main(["run", str(job_file)])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and err.startswith("geoseg: error: ")
        assert f"in use by another geoseg run: pid {holder.pid} on host {socket.gethostname()}, started " in err
        assert f"delete {url}/{storage.LOCK_OBJECT}" in err
        assert _keys(url) == [storage.LOCK_OBJECT]  # the refused run wrote nothing
        held = _lock_object(url)
        assert held is not None and held["pid"] == holder.pid and held["beats"] >= 4
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_without_heartbeat_is_taken_over_with_a_warning_naming_its_owner(s3_bucket, caplog):  # noqa: F811
    url = storage.join(s3_bucket, "stale")
    lock_url = storage.join(url, storage.LOCK_OBJECT)
    other = {"host": "elsewhere.example", "pid": 4242, "started": "2026-01-01T00:00:00Z", "command": "geoseg run a"}
    storage.write_bytes(lock_url, json.dumps({**other, "timeout_s": 60}).encode())
    with pytest.raises(OutputError, match="pid 4242 on host elsewhere.example, started 2026-01-01T00:00:00Z"):
        claim_output(url)  # another host's, written a moment ago: live
    storage.write_bytes(lock_url, json.dumps({**other, "timeout_s": 1}).encode())
    time.sleep(2.5)  # the store's clock counts in whole seconds
    with caplog.at_level(logging.WARNING, logger="geoseg.run.storelock"):
        claim = claim_output(url)
    try:
        assert any("taking over the stale lock of pid 4242 on host elsewhere.example" in r.getMessage()
                   for r in caplog.records)
        held = _lock_object(url)
        assert held is not None and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    finally:
        claim.release()
    assert _lock_object(url) is None


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(s3_bucket):  # noqa: F811
    url = storage.join(s3_bucket, "killed")
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": "t", "timeout_s": 3600}
    # the same host name and pid in another container or boot: the pid cannot be checked from here
    storage.write_bytes(storage.join(url, storage.LOCK_OBJECT), json.dumps({**dead, "space": "other"}).encode())
    with pytest.raises(OutputError, match=f"pid {dead['pid']} on host {socket.gethostname()}"):
        claim_output(url)
    storage.write_bytes(storage.join(url, storage.LOCK_OBJECT),
                        json.dumps({**dead, "space": storelock._process_space()}).encode())
    with claim_output(url):
        assert _lock_object(url)["pid"] == os.getpid()
    assert _lock_object(url) is None


def test_a_lock_lost_to_another_run_is_noticed_and_not_published_over(s3_bucket, monkeypatch):  # noqa: F811
    url = storage.join(s3_bucket, "lost")
    first = StoreLock.acquire(url, timeout_s=1)
    first._stop.set()  # a run that stalls: no more heartbeats
    first._thread.join()
    time.sleep(2.5)
    second = StoreLock.acquire(url, timeout_s=60)
    try:
        first._beat()  # the stalled run wakes up
        assert first.lost and f"pid {os.getpid()}" in first.lost
        with pytest.raises(OutputError, match="lock was taken over.*nothing was published"):
            first.verify()
        first.release()  # must not delete the new owner's lock
        assert _lock_object(url)["token"] == second.owner["token"]
        second.verify()
    finally:
        second.release()
    assert _lock_object(url) is None


@pytest.mark.integration
def test_the_lock_is_released_and_the_scratch_emptied_after_a_failing_run(tmp_path, s3_bucket,  # noqa: F811
                                                                         monkeypatch):
    url = storage.join(s3_bucket, "failing")
    seen: dict[str, object] = {}

    def failing_stages(job, scene, out, *args, **kwargs):
        (out / "polygons.gpkg").write_bytes(b"half written")
        seen["lock"] = _lock_object(url)
        seen["scratch"] = out
        raise RuntimeError("a stage failed")

    monkeypatch.setattr("geoseg.run.workflow._run_stages", failing_stages)
    with pytest.raises(RuntimeError, match="a stage failed"):
        run_job(parse_job(_job(tmp_path, url)), show_progress=False)  # fails before any cluster work
    assert seen["lock"] is not None and seen["lock"]["pid"] == os.getpid()  # held while the run ran
    assert _lock_object(url) is None
    assert not Path(seen["scratch"]).exists()
    assert json.loads(storage.read_text(storage.join(url, "run.json")))["outcome"] == "failed"
    assert storage.read_manifest(url) is None
    claim_output(url).release()  # free for the next run


@pytest.mark.integration
def test_a_run_empties_its_scratch_and_the_next_removes_what_a_killed_run_left(tmp_path, s3_bucket,  # noqa: F811
                                                                              s3_client):
    url = storage.join(s3_bucket, "clean")
    job = parse_job(_job(tmp_path, url, vectorize={"enabled": True}))
    first = run_job(job, client=s3_client, show_progress=False)
    scratch = storage.scratch_dir(url)  # the same folder for the same URL (created again here)
    assert list(scratch.iterdir()) == []
    assert _lock_object(url) is None
    published = set(storage.read_manifest(url)["outputs"])
    assert {"labels", "polygons", "model", "run"} <= published

    # what a run killed while uploading leaves: temporaries (also deeper down), an unfinished
    # multipart upload, and its scratch files
    stale = [".polygons.4242-0123456789.geoseg-tmp.gpkg", "tiles/.t.4242-abcdefabcd.geoseg-tmp.png"]
    for name in stale:
        storage.write_bytes(storage.join(url, name), b"\0" * 100)
    fs, p = storage.filesystem(url)
    bucket, key, _ = fs.split_path(p)
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key=f"{key}/polygons.gpkg")
    assert _unfinished_uploads(url) == [f"{key}/polygons.gpkg"]
    (scratch / "polygons.gpkg").write_bytes(b"from the killed run")
    (scratch / ".metrics.4242-0123456789.geoseg-tmp.csv").write_bytes(b"x")

    second = run_job(job, client=s3_client, show_progress=False)
    keys = _keys(url)
    assert not [k for k in keys if ".geoseg-tmp" in k] and storage.LOCK_OBJECT not in keys
    assert _unfinished_uploads(url) == []
    assert not scratch.exists()
    assert set(storage.read_manifest(url)["outputs"]) == published
    assert second.outputs["polygons"] == first.outputs["polygons"] == storage.join(url, "polygons.gpkg")


def test_a_store_without_conditional_writes_gets_a_warning_and_the_same_host_lock(caplog):
    url = f"memory://geoseg-lock-{os.getpid()}/out"
    with caplog.at_level(logging.WARNING, logger="geoseg.run.storelock"):
        claim = claim_output(url)
    try:
        assert isinstance(claim, StoreClaim) and isinstance(claim.lock, OutputLock)
        assert any("enforced on this host only" in r.getMessage() for r in caplog.records)
        with pytest.raises(OutputInUseError, match=f"pid {os.getpid()}"):
            claim_output(url)
    finally:
        claim.release()
    claim_output(url).release()  # free again


def test_a_server_that_ignores_if_none_match_is_found_by_the_probe(s3_bucket, monkeypatch, caplog):  # noqa: F811
    url = storage.join(s3_bucket, "ignoring")
    put = StoreLock._put

    def ignoring(self, **condition):  # what such a server does: an unconditional PUT
        return put(self, **{k: v for k, v in condition.items() if k != "IfNoneMatch"})

    monkeypatch.setattr(StoreLock, "_put", ignoring)
    with caplog.at_level(logging.WARNING, logger="geoseg.run.storelock"):
        claim = claim_output(url)
    try:
        assert isinstance(claim.lock, OutputLock)
        assert any("ignores If-None-Match" in r.getMessage() for r in caplog.records)
        assert _lock_object(url) is None  # no lock object that would pretend to keep hosts apart
    finally:
        claim.release()


def test_a_bad_lock_timeout_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("GEOSEG_LOCK_TIMEOUT", "soon")
    with pytest.raises(OutputError, match="GEOSEG_LOCK_TIMEOUT='soon' is not a number of seconds"):
        storelock.lock_timeout()


def test_geoseg_store_lock_local_takes_the_same_host_lock_instead(s3_bucket, monkeypatch):  # noqa: F811
    url = storage.join(s3_bucket, "local-lock")
    monkeypatch.setenv("GEOSEG_STORE_LOCK", "local")
    with claim_output(url) as claim:
        assert isinstance(claim.lock, OutputLock) and claim.lock.path.parent == storage.scratch_dir(url)
        assert _lock_object(url) is None
