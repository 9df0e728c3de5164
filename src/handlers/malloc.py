"""glibc's allocator, fitted to a server whose clients are served by threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's malloc.h
SERVER_ARENAS = 2


def limit_arenas(count: int = SERVER_ARENAS) -> bool:
    """At most `count` malloc arenas for this process; whether the limit was set. glibc gives each thread that
    allocates an arena of its own, up to eight per core, and an arena keeps what its threads freed for itself. The
    clients of a blob are threads: fifty of them reading one cold blob peaked at 137-178 MiB with glibc's sixteen
    arenas here, and at 129-155 MiB with two, at the same speed (paired runs; docs/design.md). MALLOC_ARENA_MAX,
    when set, stays the operator's choice; other C libraries are left as they are."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, count))
