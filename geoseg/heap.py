"""Handing freed memory back to the operating system between tiles, and fewer allocator arenas.

Why: glibc's allocator keeps memory that was freed in the middle of its heaps (and in the
per-thread arenas) for reuse, so a process that polygonises tile after tile on a few threads
shows a resident size of every tile's high-water mark, not of what it holds; on the 8000²
benchmark map that was ~110 MiB of free heap. ``malloc_trim(0)`` returns those pages. Elsewhere
than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from functools import cache


@cache
def _libc_function(name: str):  # a ctypes function or None
    """glibc's ``name``, or None where there is no such C library function (macOS, musl)."""
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX``.
_M_ARENA_MAX = -8


def limit_arenas(n: int) -> bool:
    """Let glibc's allocator use at most ``n`` arenas (one per thread by default, up to 8 per core).

    For a process geoseg owns (the ``vectorize`` command): each polygonising thread otherwise
    grows an arena of its own that keeps its high-water mark. Affects the whole process, so the
    library functions never call it. False where it is not possible.
    """
    mallopt = _libc_function("mallopt")
    return bool(mallopt and mallopt(_M_ARENA_MAX, int(n)) == 1)


def heap_releaser(min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """A function that calls :func:`release_free_heap` at most once every ``min_interval_s`` seconds.

    Why rate-limited: each call walks the heap and hands pages back, which the next tile faults in
    again; after every 512² tile that cost ~1.5 s of system time on the 8000² benchmark map.
    """
    last = [clock()]

    def maybe_release() -> None:
        now = clock()
        if now - last[0] >= min_interval_s:
            release_free_heap()
            last[0] = now

    return maybe_release


def release_free_heap() -> bool:
    """Give the allocator's free pages back to the OS; False where that is not possible."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
