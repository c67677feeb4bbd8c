"""How geoseg compiles its few hot loops (numba), and where the machine code is cached.

Why one place: every compiled loop should be cached on disk (a worker process then loads it in
milliseconds instead of compiling for about a second) and should release the GIL (threaded
workers run them in parallel), and a locked-down machine must still work. Numba caches next to
the module, or under ``~/.cache/numba``, or in ``NUMBA_CACHE_DIR``; where none is writable (a
read-only image run by a user without a home) the loop is compiled in memory in each process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compiled(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``fn`` compiled by numba in nopython mode, GIL released, cached on disk when possible."""
    import numba

    options = {"nogil": True, "boundscheck": False, **options}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(fn)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or Slurm's limit, not the host's)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
