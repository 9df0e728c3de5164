"""The arena limit, checked in fresh processes: glibc reads MALLOC_ARENA_MAX once, when a process starts."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"

# Eight threads that each allocate: glibc gives each an arena of its own unless limited. malloc_stats() prints one
# "Arena N:" block per arena to stderr.
PROBE = """
import ctypes, ctypes.util, sys, threading
from handlers.malloc import limit_arenas
limited = limit_arenas(2) if sys.argv[1] == "limit" else None
barrier = threading.Barrier(8)
def allocate():
    held = [bytearray(200_000) for _ in range(4)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(limited)
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    environment = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                            env={**environment, "PYTHONPATH": str(SRC), **env}, timeout=60)  # fmt: skip
    return result.stdout.strip(), result.stderr.count("Arena ")


def test_the_server_keeps_to_two_arenas_where_threads_would_take_more():
    assert arenas("leave")[1] > 2
    assert arenas("limit") == ("True", 2)


def test_the_operators_malloc_arena_max_wins():
    assert arenas("limit", MALLOC_ARENA_MAX="4") == ("False", 4)
