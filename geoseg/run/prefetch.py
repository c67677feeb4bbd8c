"""Read the next chunk while the current one is predicted: groups of chunks per task, one read ahead.

Without this a labelling task reads its chunk (GDAL decodes DEFLATE etc. on a CPU core) and only
then predicts, so a GPU, or on a CPU the model's threads, wait for every read. A predictor that
declares ``prefetch = True`` (DeepLab) is labelled by tasks that each take a *group* of
consecutive chunks and read chunk i+1 in a background thread while chunk i is predicted
(:func:`read_ahead`); reads go through GDAL (rasterio), which releases the GIL, and torch
releases it in its kernels, so one thread is enough.

Why groups of chunks in one task, not separate read and predict tasks:

* **Memory follows the chunk.** A group task holds at most one chunk read ahead (the read of
  chunk i+2 starts only after chunk i is written and released): two chunks' input per task
  slot instead of one (a worker with ``t`` threads runs ``t`` groups). Separate read tasks are
  root tasks to Dask: it would run reads as far ahead as its queue allows, keep their
  results (a whole chunk each) in memory until a predict slot frees, and may ship them
  between workers.
* **The GPU annotation stays as it is.** The whole group runs where ``predictor.resources``
  allows (a ``GPU`` worker); the read thread lives inside that task and needs no slot of its
  own, whereas separate read tasks would need extra worker threads next to the GPU slot.
* **Resume and worker loss stay per chunk.** Each chunk of a group is written and marked
  done on its own (:func:`geoseg.run.labelling.label_task` does it, as for a lone chunk), so a
  killed run redoes only the chunks without a marker, and a group that Dask reruns after a
  lost worker counts the chunks its first attempt finished and predicts only the rest.
* **Identical labels.** The same ``predict`` runs on the same array in the task's own thread;
  only *when* the array was read changes.

What it costs is load balance: Dask cannot split a group between workers. :func:`group_sizes`
therefore makes groups large while much work remains and shrinks them to single chunks at the
end (guided self-scheduling), so the tail, where one worker could idle while another finishes
a long group, is never longer than one chunk. With one prediction slot (one GPU worker) there
is nothing to balance and every group has :data:`MAX_GROUP` chunks. The first chunk of each
group is read without overlap, so up to 1/8 of the reads stay visible.

Per-pixel methods (k-means, thresholds) keep one task per chunk: on a CPU their prediction and
their read compete for the same cores, and their chunks are fast, so groups would mostly cost
balance. Nothing here is a job-file option: the predictor decides (``DeepLabPredictor.prefetch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Most chunks in one task. Each group's first read is not overlapped, so 8 hides 7/8 of the reads,
#: and a progress bar still moves every 8 chunks.
MAX_GROUP = 8


def read_ahead(items: Sequence[T], read: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield ``(item, read(item))`` in order, reading the next item in a background thread meanwhile.

    At most one read runs ahead: the read of item i+1 is started when item i is handed out, and the
    read of item i+2 only when the caller asks for item i+1. The caller should drop its reference to
    item i's data before asking for the next (``del``), so no more than two items' data are alive.
    An exception of a read is raised when its item is asked for; closing the iterator early waits
    for the one read in flight.

    >>> [(i, r) for i, r in read_ahead([1, 2, 3], lambda i: i * 10)]
    [(1, 10), (2, 20), (3, 30)]
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-read-ahead") as pool:
        pending: Future[R] = pool.submit(read, items[0])
        try:
            for i, item in enumerate(items):
                result = pending.result()
                if i + 1 < len(items):
                    pending = pool.submit(read, items[i + 1])
                yield item, result
                del result  # the generator keeps no reference to the chunk handed out
        finally:
            pending.cancel()


def group_sizes(n: int, slots: int, max_group: int = MAX_GROUP) -> list[int]:
    """Sizes of consecutive groups covering ``n`` chunks for ``slots`` tasks running at once.

    One slot: groups of ``max_group``. Several: each group takes ``1/(2 × slots)`` of the chunks
    still left (at most ``max_group``, at least one), so groups shrink towards the end and the
    last tasks are single chunks.

    >>> group_sizes(16, 1)
    [8, 8]
    >>> group_sizes(9, 2)
    [3, 2, 1, 1, 1, 1]
    >>> sum(group_sizes(100, 2)), max(group_sizes(100, 2)), group_sizes(100, 2)[-3:]
    (100, 8, [1, 1, 1])
    """
    if n <= 0:
        return []
    if slots <= 1:
        return [max_group] * (n // max_group) + ([n % max_group] if n % max_group else [])
    sizes = []
    left = n
    while left:
        g = max(1, min(max_group, math.ceil(left / (2 * slots)), left))
        sizes.append(g)
        left -= g
    return sizes


def split(items: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """``items`` cut into consecutive lists of ``sizes``.

    >>> split("abcdef", [3, 2, 1])
    [['a', 'b', 'c'], ['d', 'e'], ['f']]
    """
    out, start = [], 0
    for s in sizes:
        out.append(list(items[start:start + s]))
        start += s
    return out


def prediction_slots(client: Any, resources: dict[str, float] | None) -> int:
    """How many prediction tasks the cluster runs at once: its threads, or how many times the workers
    offer ``resources`` (e.g. one per ``GPU``); at least 1 (workers may still be joining)."""
    from geoseg.run.cluster import describe

    total = 0
    for w in describe(client, "given").workers.values():
        threads = int(w.get("nthreads") or 0)
        if resources:
            offered = w.get("resources") or {}
            total += min([threads] + [int(offered.get(k, 0) // v) for k, v in resources.items() if v > 0])
        else:
            total += threads
    return max(1, total)
