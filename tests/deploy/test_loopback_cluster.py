"""geoseg on a real Dask cluster of separate processes: ``dask scheduler`` and ``dask worker``
started the way the deployment recipes start them (tests/deploy/test_deploy.py checks that the image,
compose, Kubernetes and Slurm commands are these commands), on loopback, then
``geoseg run JOB --scheduler ADDRESS`` as its own process; plain TCP and mutual TLS.

The slow tests run deploy/slurm/geoseg.sbatch with a stand-in ``srun`` and deploy/slurm/cluster.py
with a stand-in ``dask_jobqueue``, so the Slurm recipes' own code runs a job end to end here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from tests.deploy.recipes import (
    DEPLOY,
    TLSFiles,
    compose_config,
    dockerfile_healthcheck,
    scheduler_command,
    worker_command,
)
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration

TLS_ENV_PREFIX = "DASK_DISTRIBUTED__COMM__"


# --------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """Processes this test started, each in its own session so its children stop with it."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # closed in stop()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or clean_env(),
                                start_new_session=True)
        proc._log = log  # type: ignore[attr-defined]
        self.procs.append((name, proc))
        return proc

    def log_tail(self, n: int = 3000) -> str:
        parts = []
        for name, _ in self.procs:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ---\n{text[-n:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM each process group (the nanny stops its worker), then SIGKILL what is left."""
        for _, proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc._log.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    logs.mkdir(parents=True, exist_ok=True)
    ps = Processes(logs)
    try:
        yield ps
    finally:
        ps.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Dask comm/TLS settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(TLS_ENV_PREFIX) and k != "DASK_CONFIG"}
    env.update(extra)
    return env


def wait_for_scheduler_file(path: Path, ps: Processes, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        for name, proc in ps.procs:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{ps.log_tail()}"
        time.sleep(0.2)
    raise AssertionError(f"no scheduler file after {timeout} s\n{ps.log_tail()}")


def wait_for_workers(address: str, n: int, ps: Processes, security=None) -> dict:
    """Block until ``n`` workers joined; the scheduler's view of them (address -> info)."""
    from distributed import Client

    try:
        with Client(address, security=security, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)
            return client.scheduler_info(n_workers=-1)["workers"]
    except Exception as exc:
        raise AssertionError(f"workers did not join: {exc!r}\n{ps.log_tail()}") from exc


def write_job(folder: Path) -> tuple[Path, Path]:
    """A small k-means job like tests/run/test_workflow.py's, without vectors or reference."""
    scene, _ = blocky_scene(folder)
    job = {"name": "loopback", "inputs": [str(scene)], "output": str(folder / "out"), "chunk_size": 128,
           "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "n_init": 1,
                      "features": {"indices": ["ndvi"]}},
           "vectorize": {"enabled": False}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path, scene


def geoseg_run(job: Path, address: str, env: dict[str, str], ps: Processes) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", "-q", str(job), "--scheduler", address],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, f"geoseg run failed ({proc.returncode}):\n{proc.stderr}\n{ps.log_tail()}"
    return proc


def check_outputs(out: Path, scene: Path, address: str, gpu_workers: int = 1) -> None:
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete"
    cluster = record["cluster"]
    assert cluster["kind"] == "remote"
    assert cluster["scheduler"] == address
    assert cluster["n_workers"] == 2 and cluster["threads"] == 2
    assert cluster["gpu_workers"] == gpu_workers
    with rasterio.open(out / "labels.zarr") as ds, rasterio.open(scene) as src:
        labels = ds.read(1)
        assert ds.crs == src.crs and ds.transform == src.transform
        assert labels.shape == (src.height, src.width)
    assert (labels == 255).sum() == 20 * 25  # the scene's nodata corner
    assert set(np.unique(labels)) - {255} == {0, 1, 2, 3}


def healthcheck_ok(port: int) -> bool:
    """The images' HEALTHCHECK command, run here against ``port``."""
    cmd = dockerfile_healthcheck(DEPLOY / "docker" / "Dockerfile.cpu")
    assert cmd[0] == "python"
    proc = subprocess.run([sys.executable, *cmd[1:]], env=clean_env(GEOSEG_HEALTH_PORT=str(port)),
                          capture_output=True, timeout=30)
    return proc.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- tests


def test_geoseg_run_on_separate_scheduler_and_worker_processes(tmp_path):
    job, scene = write_job(tmp_path)
    with processes(tmp_path / "logs") as ps:
        ps.start("scheduler", scheduler_command(tmp_path / "scheduler.json"))
        info = wait_for_scheduler_file(tmp_path / "scheduler.json", ps)
        address = info["address"]
        assert address.startswith("tcp://127.0.0.1:")
        ps.start("worker-cpu", worker_command(address))
        ps.start("worker-gpu", worker_command(address, gpu=True))
        workers = wait_for_workers(address, 2, ps)

        # the images' HEALTHCHECK passes against the scheduler's and the workers' HTTP ports
        assert healthcheck_ok(info["services"]["dashboard"])
        for w in workers.values():
            assert healthcheck_ok(w["services"]["dashboard"])
        assert not healthcheck_ok(free_port())
        assert sorted(w["resources"].get("GPU", 0) for w in workers.values()) == [0, 1]

        geoseg_run(job, address, clean_env(), ps)
    check_outputs(tmp_path / "out", scene, address)


def test_geoseg_run_over_mutual_tls(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(certs)], check=True,
                   capture_output=True, timeout=60)
    tls = TLSFiles(certs)
    compose = compose_config()

    def rewritten(text: str) -> str:  # the containers' /certs/... paths, here
        return text.replace("/certs/", f"{certs}/")

    # The client as the compose job service runs it: TLS from the DASK_DISTRIBUTED__COMM__* variables.
    client_env = clean_env(**{k: rewritten(v) for k, v in compose["services"]["job"]["environment"].items()
                              if k.startswith(TLS_ENV_PREFIX)})
    # A worker as the Kubernetes pods run it: TLS from deploy/dask-tls.yaml in a Dask config folder.
    config_dir = tmp_path / "dask-config"
    config_dir.mkdir()
    (config_dir / "dask-tls.yaml").write_text(rewritten((DEPLOY / "dask-tls.yaml").read_text()))

    job, scene = write_job(tmp_path)
    with processes(tmp_path / "logs") as ps:
        ps.start("scheduler", scheduler_command(tmp_path / "scheduler.json", tls=tls))
        address = wait_for_scheduler_file(tmp_path / "scheduler.json", ps)["address"]
        assert address.startswith("tls://127.0.0.1:")
        ps.start("worker-cpu", worker_command(address, tls=tls))  # TLS from the command line
        ps.start("worker-gpu", worker_command(address, gpu=True), env=clean_env(DASK_CONFIG=str(config_dir)))

        from distributed.security import Security

        client_sec = Security(tls_ca_file=tls.ca, tls_client_cert=tls.cert("client"),
                              tls_client_key=tls.key("client"), require_encryption=True)
        workers = wait_for_workers(address, 2, ps, security=client_sec)
        assert all(a.startswith("tls://") for a in workers)

        # mutual TLS: a client whose certificate another CA signed is refused
        from distributed import Client

        other = TLSFiles(tmp_path / "other-certs")
        subprocess.run(["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(other.dir)], check=True,
                       capture_output=True, timeout=60)
        stranger = Security(tls_ca_file=tls.ca, tls_client_cert=other.cert("client"),
                            tls_client_key=other.key("client"), require_encryption=True)
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=stranger, timeout=3)
        with pytest.raises((OSError, TimeoutError)):  # and so is plain TCP
            Client(address.replace("tls://", "tcp://"), timeout=3)
        deadline = time.monotonic() + 10
        while "CERTIFICATE_VERIFY_FAILED" not in ps.log_tail(10**6) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "CERTIFICATE_VERIFY_FAILED" in ps.log_tail(10**6)

        geoseg_run(job, address, client_env, ps)
    check_outputs(tmp_path / "out", scene, address)


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun: run the command --ntasks times on this machine.
n=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n=${1#*=}; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
pids=()
for i in $(seq 0 $((n - 1))); do SLURM_PROCID=$i "$@" & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null; wait' TERM INT
wait
"""


@pytest.mark.slow
def test_sbatch_script_runs_a_job(tmp_path):
    """deploy/slurm/geoseg.sbatch end to end, with ``srun`` replaced by local processes."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text(FAKE_SRUN)
    (fake_bin / "srun").chmod(0o755)
    job, scene = write_job(tmp_path)
    env = clean_env(PATH=f"{fake_bin}:{os.environ['PATH']}", SLURM_JOB_ID="4242", SLURM_NTASKS="2",
                    SLURM_SUBMIT_DIR=str(tmp_path), GEOSEG_VENV=sys.prefix, GEOSEG_DASK_INTERFACE="lo",
                    SLURM_MEM_PER_CPU="2048", TMPDIR=str(tmp_path))
    proc = subprocess.Popen(["bash", str(DEPLOY / "slurm" / "geoseg.sbatch"), str(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-4000:]
    address = json.loads((tmp_path / "out" / "run.json").read_text())["cluster"]["scheduler"]
    check_outputs(tmp_path / "out", scene, address, gpu_workers=0)


@pytest.mark.slow
def test_jobqueue_recipe_runs_a_job(tmp_path, monkeypatch, capsys):
    """deploy/slurm/cluster.py's main() with a stand-in ``dask_jobqueue.SLURMCluster`` (a LocalCluster
    that records its keyword arguments): the recipe's own geoseg code runs a job."""
    from distributed import LocalCluster

    seen: dict = {}

    class SLURMCluster(LocalCluster):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address="127.0.0.1:0", memory_limit="2GiB")

        def scale(self, n=None, jobs=0, **kw):  # dask-jobqueue's signature
            return super().scale(jobs * seen["processes"] if jobs else n)

    fake = types.ModuleType("dask_jobqueue")
    fake.SLURMCluster = SLURMCluster
    monkeypatch.setitem(sys.modules, "dask_jobqueue", fake)
    spec = importlib.util.spec_from_file_location("geoseg_slurm_cluster", DEPLOY / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    job, _ = write_job(tmp_path)
    # one "Slurm job" of 2 single-threaded worker processes
    assert module.main([str(job), "--jobs", "1", "--cores", "2", "--log-directory", str(tmp_path / "logs")]) == 0
    assert seen["processes"] == seen["cores"] == 2 and seen["worker_extra_args"] == []
    assert "labels" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["outcome"] == "complete" and record["cluster"]["kind"] == "given"
