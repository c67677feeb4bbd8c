"""Run a geoseg job on a Slurm cluster with dask-jobqueue.

Run it on a login node (or inside a small allocation) from the geoseg environment, with the job
file, inputs and outputs on a file system that every compute node sees::

    pip install "dask-jobqueue>=0.8"          # not part of deploy/requirements.lock
    python deploy/slurm/cluster.py workflows/landcover-kmeans.yaml --jobs 4
    python deploy/slurm/cluster.py deeplab-job.yaml --jobs 2 --partition gpu --account proj42
    python deploy/slurm/cluster.py JOB.yaml --tls-dir ~/geoseg-certs      # TLS (deploy/tls/make-certs.sh)

The Dask scheduler runs in this process; each Slurm job (``sbatch``, submitted by dask-jobqueue)
is one node's worth of workers. A k-means job gets CPU jobs: ``cores`` worker processes of one
thread each (the shape geoseg's local cluster uses). A DeepLab job (or ``--gpu``) gets GPU jobs:
``--gres=gpu:1`` and one worker process that advertises ``--resources GPU=1``, the resource
geoseg's GPU-annotated tasks ask for. ``--print-script`` shows the batch script without submitting.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: Per Slurm job (one worker node); override on the command line.
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "cores": 8,
        "processes": 8,  # one thread per worker process
        "memory": "32GiB",
        "walltime": "04:00:00",
        "job_extra_directives": [],
        "worker_extra_args": [],
    },
    "gpu": {
        "cores": 8,
        "processes": 1,  # one worker process per GPU: --resources applies to each process
        "memory": "64GiB",
        "walltime": "04:00:00",
        "job_extra_directives": ["--gres=gpu:1"],
        "worker_extra_args": ["--resources", "GPU=1"],
    },
}


def cluster_kwargs(
    profile: str,
    *,
    partition: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
    cores: int | None = None,
    memory: str | None = None,
    interface: str | None = None,
    log_directory: str | None = None,
    local_directory: str | None = "${TMPDIR:-/tmp}",
    security: Any = None,
) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` for the ``cpu`` or ``gpu`` profile."""
    base = PROFILES[profile]
    kw: dict[str, Any] = {
        "cores": cores or base["cores"],
        "processes": base["processes"] if profile == "gpu" else (cores or base["processes"]),
        "memory": memory or base["memory"],
        "walltime": walltime or base["walltime"],
        "job_extra_directives": list(base["job_extra_directives"]),
        "worker_extra_args": list(base["worker_extra_args"]),
        "job_name": f"geoseg-{profile}",
        "scheduler_options": {"dashboard_address": ":8787"},
    }
    if partition:
        kw["queue"] = partition
    if account:
        kw["account"] = account
    if interface:  # e.g. "ib0": the network the workers and the scheduler talk over
        kw["interface"] = interface
    if log_directory:
        kw["log_directory"] = log_directory
    if local_directory:  # node-local scratch for spilling; expanded in the batch script
        kw["local_directory"] = local_directory
    if security is not None:
        kw["security"] = security
        kw["protocol"] = "tls://"
    return kw


def tls_security(cert_dir: str) -> Any:
    """A ``distributed.Security`` from the files deploy/tls/make-certs.sh writes (on a shared path)."""
    from pathlib import Path

    from distributed.security import Security

    d = Path(cert_dir).expanduser().resolve()
    return Security(
        tls_ca_file=str(d / "ca.pem"),
        tls_scheduler_cert=str(d / "scheduler.pem"),
        tls_scheduler_key=str(d / "scheduler-key.pem"),
        tls_worker_cert=str(d / "worker.pem"),
        tls_worker_key=str(d / "worker-key.pem"),
        tls_client_cert=str(d / "client.pem"),
        tls_client_key=str(d / "client-key.pem"),
        require_encryption=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("job", help="geoseg job file (YAML)")
    p.add_argument("--jobs", type=int, default=2, help="Slurm jobs (worker nodes) to start (default 2)")
    p.add_argument("--gpu", action="store_true", help="GPU workers even for a k-means job")
    p.add_argument("--partition", help="Slurm partition (#SBATCH -p)")
    p.add_argument("--account", help="Slurm account (#SBATCH -A)")
    p.add_argument("--walltime", help="per worker job, e.g. 02:00:00")
    p.add_argument("--cores", type=int, help="cores per worker job")
    p.add_argument("--memory", help="memory per worker job, e.g. 64GiB")
    p.add_argument("--interface", help="network interface for Dask traffic, e.g. ib0")
    p.add_argument("--log-directory", default="geoseg-slurm-logs", help="worker job logs")
    p.add_argument("--tls-dir", help="folder with ca.pem and scheduler/worker/client certificates")
    p.add_argument("--wait", type=float, default=1800, help="seconds to wait for the first workers")
    p.add_argument("--print-script", action="store_true", help="print the worker batch script and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from distributed import Client

    from geoseg.cli import print_result
    from geoseg.errors import GeosegError
    from geoseg.run.jobspec import load_job
    from geoseg.run.workflow import run_job

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print("cluster.py needs dask-jobqueue: pip install 'dask-jobqueue>=0.8'", file=sys.stderr)
        return 2

    try:
        job = load_job(args.job)
    except GeosegError as exc:
        print(f"geoseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    profile = "gpu" if args.gpu or job.method.kind == "deeplab" else "cpu"
    kwargs = cluster_kwargs(
        profile,
        partition=args.partition,
        account=args.account,
        walltime=args.walltime,
        cores=args.cores,
        memory=args.memory,
        interface=args.interface,
        log_directory=args.log_directory,
        security=tls_security(args.tls_dir) if args.tls_dir else None,
    )
    with SLURMCluster(**kwargs) as cluster:
        if args.print_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        with Client(cluster, security=kwargs.get("security")) as client:
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            # Slurm may queue the worker jobs for a while; start once the first node is up.
            client.wait_for_workers(1, timeout=args.wait)
            try:
                result = run_job(job, client=client, show_progress=sys.stderr.isatty())
            except GeosegError as exc:
                print(f"geoseg: error: {exc}", file=sys.stderr)
                return exc.exit_code
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
