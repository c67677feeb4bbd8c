"""What a run asks of the machine, checked before any worker starts: cluster shape, memory per chunk.

A cluster larger than the machine (256 workers x 64 threads on 2 cores started 256 processes and
loaded the machine to 156) or a memory limit below what one chunk needs (1 MiB: Dask's nanny
restarted its workers in a loop for minutes, then ``KilledWorker``) is refused here in one line,
with the figure that would work. The estimate of a chunk's working set is a floor (what the
reads and the method hold at least), so a job that would run is never refused by it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import ClusterError

#: Threads a local cluster may have in all, per core of this machine (more only queue up).
THREADS_PER_CORE = 4
#: Default memory limit of a local worker, lowered to the machine's RAM shared among the workers.
DEFAULT_MEMORY_LIMIT = 4 * 2**30
#: Resident memory of an idle worker process with geoseg's modules loaded (a floor: ~250 MiB measured).
WORKER_BASELINE = 160 * 2**20

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str | int) -> int:
    """Bytes from a memory size as Dask writes it (``"4GiB"``, ``"500 MB"``, ``2e9``).

    >>> parse_memory("4GiB"), parse_memory("1.5 GB"), parse_memory(1024)
    (4294967296, 1500000000, 1024)
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ClusterError(f"memory_limit {text!r} is not a size; write it like 4GiB, 512MiB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def machine() -> tuple[int, int]:
    """``(cores, RAM bytes)`` this process may use (CPU affinity, the machine's memory)."""
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return cores, int(psutil.virtual_memory().total)


def local_memory_limit(memory_limit: str | int | None, n_workers: int) -> int:
    """Bytes per local worker: the given limit, or :data:`DEFAULT_MEMORY_LIMIT` within the machine's RAM."""
    if memory_limit is not None:
        return parse_memory(memory_limit)
    _, ram = machine()
    return min(DEFAULT_MEMORY_LIMIT, ram // max(n_workers, 1))


def check_local_cluster(n_workers: int, threads_per_worker: int, memory_limit: int) -> None:
    """Refuse a local cluster this machine cannot hold: too many threads, or memory limits beyond its RAM."""
    cores, ram = machine()
    threads = n_workers * threads_per_worker
    if threads > THREADS_PER_CORE * cores:
        raise ClusterError(
            f"cluster: {n_workers} workers x {threads_per_worker} threads = {threads} threads, but this machine "
            f"has {cores} core(s); ask for at most {THREADS_PER_CORE * cores} threads in all "
            "(n_workers x threads_per_worker), or give --scheduler for a larger cluster")
    if n_workers * memory_limit > ram:
        fit = ram // n_workers
        raise ClusterError(
            f"cluster: {n_workers} workers x memory_limit {_mib(memory_limit)} = {_mib(n_workers * memory_limit)}, "
            f"more than this machine's {_mib(ram)} of RAM; lower memory_limit to at most {_mib(fit)} "
            "or use fewer workers")


@dataclass(frozen=True)
class WorkingSet:
    """A floor of the memory one worker needs for one chunk, and what it is made of (for the message)."""

    bytes: int
    what: str


def chunk_working_set(scene: Any, chunk: int, method: Any) -> WorkingSet:
    """What a worker holds at least while it labels one chunk of ``scene``: its process, the chunk's
    reads (the file blocks GDAL decompresses for it, the pixels in the files' type and in float32),
    and the method's arrays (features, distances or class probabilities, labels).

    ``scene``: a :class:`~geoseg.io.scene.Scene`; ``method``: the job's ``method:`` model.
    """
    side = scene.chunk_grid(chunk).chunk
    h, w = min(side, scene.height), min(side, scene.width)
    px = h * w
    bands = scene.count
    sources = [s for layer in scene.layers + scene.masks for s in layer.sources]
    itemsize = max((np.dtype(s.dtype).itemsize for s in sources), default=4)
    # the blocks one chunk makes GDAL decompress: a chunk's pixels, or a whole block when blocks are larger
    blocks = max((min(s.grid.height, max(h, s.block[0])) * min(s.grid.width, max(w, s.block[1]))
                  * s.count * np.dtype(s.dtype).itemsize for s in sources), default=0)
    per_px = bands * (itemsize + 4) + 1  # the read in the files' type, as float32, validity
    kind = getattr(method, "kind", "kmeans")
    if kind == "kmeans":
        n_feat = bands + len(method.features.indices)
        per_px += 4 * (2 * n_feat + method.n_clusters) + 1
        what = f"k-means, {n_feat} features, {method.n_clusters} clusters"
    elif kind == "deeplab":
        per_px += 4 * 2 * bands + 1  # normalised tiles, labels (class probabilities are added per batch)
        what = "DeepLab"
    else:
        per_px += 4 * 3 + 1  # index, smoothed index, labels
        what = f"threshold of {getattr(method, 'index', 'an index')}"
    total = WORKER_BASELINE + blocks + px * per_px
    return WorkingSet(total, f"{h} x {w} px x {bands} band(s) of {_dtype_names(sources)}, {what}, "
                             f"~{_mib(WORKER_BASELINE)} per worker process")


def check_memory_limit(limit: int, need: WorkingSet, where: str = "cluster.memory_limit") -> None:
    """Refuse a worker memory limit below one chunk's working set."""
    if limit and limit < need.bytes:
        raise ClusterError(
            f"{where} {_mib(limit)} is less than one chunk needs (at least {_mib(need.bytes)}: {need.what}); "
            f"give at least {_mib(_round_up(need.bytes))} per worker, or a smaller chunk_size")


def check_cluster_memory(client: Any, need: WorkingSet) -> None:
    """The same check on the workers of a running cluster (a scheduler given by address)."""
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    limits = [int(w.get("memory_limit") or 0) for w in info.get("workers", {}).values()]
    limits = [v for v in limits if v]
    if limits:
        check_memory_limit(min(limits), need, "the smallest worker memory limit")


def user_error(exc: BaseException) -> ClusterError | None:
    """A :class:`ClusterError` for Dask failures a user can act on (a worker killed again and again), else None."""
    if type(exc).__name__ == "KilledWorker":
        return ClusterError(
            f"Dask workers died while running a task ({exc}); they were most likely killed for memory: "
            "raise cluster.memory_limit, lower chunk_size, or check the input (a huge or damaged file)")
    return None


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _dtype_names(sources: list[Any]) -> str:
    return "/".join(sorted({s.dtype for s in sources})) or "float32"


def _round_up(n: int) -> int:
    """``n`` rounded up to a size worth writing (a multiple of 64 MiB)."""
    step = 64 * 2**20
    return math.ceil(n / step) * step


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{math.ceil(n / 2**20)} MiB"
