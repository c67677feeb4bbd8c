"""Handing freed memory back to the operating system between tiles.

Why: glibc's allocator keeps memory that was freed in the middle of its heaps (and in the
per-thread arenas) for reuse, so a process that polygonises tile after tile on a few threads
shows a resident size of every tile's high-water mark, not of what it holds; on the 8000²
benchmark map that was ~110 MiB of free heap. ``malloc_trim(0)`` returns those pages. Elsewhere
than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Give the allocator's free pages back to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
