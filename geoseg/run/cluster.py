"""Getting a Dask client: a local multi-process cluster on loopback, or an existing scheduler.

Local clusters listen on 127.0.0.1 only, and their shape is checked against the machine first
(:mod:`geoseg.run.limits`). Remote schedulers are reached by address; TLS is configured with Dask's
own settings (``DASK_DISTRIBUTED__COMM__TLS__*`` environment variables or a Dask config file), which
the deployment recipes in ``deploy/`` set. A scheduler must complete Dask's handshake within the
connect timeout: a port that accepts the connection and never answers is an error, not a wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from geoseg.errors import ClusterError
from geoseg.run.interrupt import workers_ignore_sigint

log = logging.getLogger(__name__)

#: Environment of the worker processes geoseg starts. Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``;
#: setting any glibc malloc threshold also freezes the mmap threshold at 128 KiB, so every larger
#: per-chunk temporary (features, distances) becomes a fresh ``mmap`` that is page-faulted and
#: zeroed again: k-means prediction ran 4x slower in a worker than in a plain process. glibc reads
#: these variables when a process starts, so they must be in the environment the worker is spawned
#: with (Dask's ``pre-spawn-environ``), not set afterwards. The images and the Slurm script set the same.
WORKER_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20)}

#: Worker loggers that report a stopped run's cancelled tasks as warnings, one per task, on the
#: terminal the local workers share with the CLI (``geoseg.run.interrupt``): only their errors are shown.
QUIET_WORKER_LOGGERS: dict[str, str] = {"distributed.worker.state_machine": "error"}


def start_local_cluster(
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "4GiB",
    dashboard: bool = True,
    resources: dict[str, float] | None = None,
):
    """A multi-process ``LocalCluster`` on loopback whose workers start with :data:`WORKER_ENV`.

    Without ``dashboard`` the scheduler still serves Dask's health and metrics routes over HTTP; they get
    a free loopback port instead of the dashboard's 8787, so a scheduled run next to another cluster (or
    a dashboard) logs no port clash.
    """
    import dask
    from distributed import LocalCluster

    from geoseg.run.limits import check_local_cluster, local_memory_limit

    memory_limit = local_memory_limit(memory_limit, n_workers)
    check_local_cluster(n_workers, threads_per_worker, memory_limit)
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), **WORKER_ENV}
    if "DASK_LOGGING" not in os.environ:  # workers configure logging when they start, from their environment
        spawn_env["DASK_LOGGING"] = repr(QUIET_WORKER_LOGGERS)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            scheduler_kwargs=None if dashboard else {"dashboard_address": "127.0.0.1:0"},
            memory_limit=memory_limit,
            resources=resources,
        )


@dataclass
class ClusterInfo:
    """What a run records about the cluster it ran on."""

    kind: str
    scheduler: str
    dashboard: str | None
    n_workers: int
    threads: int
    memory_limit_bytes: int
    gpu_workers: int
    workers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "workers"}


def describe(client, kind: str) -> ClusterInfo:
    """Summarise the workers a client sees (count, threads, memory, GPU resources)."""
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    workers = info.get("workers", {})
    return ClusterInfo(
        kind=kind,
        scheduler=client.scheduler.address,
        dashboard=_dashboard(client),
        n_workers=len(workers),
        threads=sum(w.get("nthreads", 0) for w in workers.values()),
        memory_limit_bytes=sum(int(w.get("memory_limit") or 0) for w in workers.values()),
        gpu_workers=sum(1 for w in workers.values() if w.get("resources", {}).get("GPU", 0) > 0),
        workers={a: {"nthreads": w.get("nthreads"), "resources": w.get("resources", {})} for a, w in workers.items()},
    )


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _dashboard(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # no dashboard (bokeh missing or disabled)
        return None


def _no_nvidia_device() -> bool:
    """True when this machine plainly has no NVIDIA GPU (no driver, no device nodes), so asking
    torch is not needed: importing it costs seconds at the start of every run, k-means ones too."""
    import glob
    import sys

    if "torch" in sys.modules:
        return False
    return not (os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*"))


def local_gpu_count() -> int:
    """Number of CUDA devices visible here (0 when torch or CUDA is absent)."""
    if _no_nvidia_device():
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | None = None,
    dashboard: bool = True,
    timeout: float = 10,
) -> Iterator[tuple[Any, ClusterInfo]]:
    """Yield ``(client, info)``: connected to ``scheduler`` if given, else a new local cluster.

    A local cluster gets one worker per GPU-less process; if this machine has a GPU, the
    first worker advertises a ``GPU`` resource so GPU-annotated tasks land there. Its
    ``memory_limit`` per worker defaults to 4 GiB, or the machine's RAM shared among the workers
    when that is less; the shape is refused (``ClusterError``) when the machine cannot hold it.
    """
    from distributed import Client

    if scheduler:
        check_tls_settings(scheduler)
        check_handshake(scheduler, timeout)
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s "
                f"({type(exc).__name__}); is it running, is the address right? (--connect-timeout waits longer)"
            ) from exc
        try:
            yield client, describe(client, "remote")
        finally:
            client.close()
        return

    gpus = local_gpu_count()
    try:
        with workers_ignore_sigint():  # Ctrl-C reaches the client only, which closes the cluster in order
            cluster = start_local_cluster(
                n_workers, threads_per_worker, memory_limit, dashboard, resources={"GPU": 1} if gpus else None
            )
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterError(f"could not start a local Dask cluster: {exc}") from exc
    client = Client(cluster)
    from geoseg.run.worker_logs import QuietUserErrors, announce_teardown

    client.register_plugin(QuietUserErrors())  # these workers print to the user's terminal or job log
    info = describe(client, "local")
    if not dashboard:  # Dask still names its health routes' port as the dashboard's: there is none to show
        info.dashboard = None
    try:
        yield client, info
    finally:
        announce_teardown(client)
        client.close()
        with _quiet_teardown():
            cluster.close()


@contextlib.contextmanager
def _quiet_teardown() -> Iterator[None]:
    """Our own cluster's shutdown: a worker slow to exit on a loaded machine is killed by its nanny, which
    Dask reports as a warning ("still alive after ... killing") on the user's terminal; nothing is lost (the
    run's outputs are written), so that line is kept out of the run's output."""
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nanny.setLevel(level)


def check_tls_settings(scheduler: str) -> None:
    """Refuse a ``tls://`` address when Dask has no TLS settings (Dask fails with a bare ``TypeError``)."""
    if not scheduler.lower().startswith("tls://"):
        return
    from distributed.security import Security

    if Security().get_connection_args("client").get("ssl_context") is None:
        raise ClusterError(
            f"{scheduler} is a TLS address but Dask has no TLS settings here; set "
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (see deploy/), or use the tcp:// address")


def check_handshake(scheduler: str, timeout: float) -> None:
    """Refuse a scheduler that does not complete Dask's handshake and answer one request within ``timeout``.

    Dask's own connect timeout covers opening the connection; a port that accepts it and then
    says nothing (a proxy, another service, a hung scheduler) made ``Client`` wait for minutes.
    A ``tcp://`` scheduler speaks first (Dask's handshake), which a plain socket hears without
    importing Dask; other protocols are asked for their identity over Dask's own comm, on a thread
    and event loop of its own, so it works under a running loop (notebooks).
    """
    if scheduler.lower().startswith("tcp://") or "://" not in scheduler:
        _tcp_speaks_first(scheduler, timeout)
        return
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    async def probe() -> None:
        comm = await comm_connect(scheduler, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            await comm.read()
        finally:
            comm.abort()

    async def bounded() -> None:
        await asyncio.wait_for(probe(), timeout)

    pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-handshake")
    try:
        pool.submit(asyncio.run, bounded()).result(timeout + 5)
    except TimeoutError as exc:  # concurrent.futures' and asyncio's are this one
        raise ClusterError(
            f"the Dask scheduler at {scheduler} did not complete the handshake within {timeout:g} s; "
            "is it a Dask scheduler, and is the address right? (--connect-timeout waits longer)") from exc
    except (OSError, ValueError) as exc:  # refused, unreachable, no such protocol: said the usual way below
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s "
            f"({type(exc).__name__}); is it running, is the address right? (--connect-timeout waits longer)"
        ) from exc
    finally:
        pool.shutdown(wait=False)


def _tcp_speaks_first(scheduler: str, timeout: float) -> None:
    """Connect to a ``tcp://`` scheduler and wait for the first bytes of its handshake (it writes first).

    A refused connection is retried until the timeout, as Dask does (a scheduler may still be starting).
    """
    import socket
    import time

    host, _, port = scheduler.split("://", 1)[-1].rpartition(":")
    if not host:
        host, port = port, "8786"  # Dask's default scheduler port
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=max(deadline - time.monotonic(), 0.01))
            break
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError) or time.monotonic() + 0.2 > deadline:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s "
                    f"({type(exc).__name__}); is it running, is the address right? (--connect-timeout waits longer)"
                ) from exc
            time.sleep(0.2)
    with sock:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            first: bytes | None = sock.recv(1)
        except OSError:  # timed out, or reset
            first = None
    if not first:
        raise ClusterError(
            f"the Dask scheduler at {scheduler} did not complete the handshake within {timeout:g} s "
            f"({'it closed the connection' if first == b'' else 'it accepted the connection and said nothing'}); "
            "is it a Dask scheduler, and is the address right? (--connect-timeout waits longer)")
