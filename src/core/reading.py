"""How much each client reading a blob body may read at a time: the readers of one process share a memory budget.

Each reader holds about two chunks (one read, one in its socket's buffer). The chunk shrinks as readers add up, so
that fifty clients of one layer stay within the budget, and one alone reads a MiB at a time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from core.errors import Unavailable

MOST_BYTES = 1 << 20
LEAST_BYTES = 64 << 10
BUDGET_BYTES = 32 << 20


class ReadBudget:
    def __init__(self, budget_bytes: int = BUDGET_BYTES, most: int = MOST_BYTES, least: int = LEAST_BYTES) -> None:
        self._budget = budget_bytes
        self._most = most
        self._least = least
        self._count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Callable[[], int]]:
        """One reader for the duration; yields its chunk size, asked again before each read."""
        with self._lock:
            self._count += 1
        try:
            yield self.chunk_size
        finally:
            with self._lock:
                self._count -= 1

    def chunk_size(self) -> int:
        return max(self._least, min(self._most, self._budget // (2 * max(self._count, 1))))

    def file_chunks(self, file: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
        """`length` bytes of a file from `offset`, as one reader, closing the file when done; Unavailable when the
        file ends before (a response cut short, not one padded or silently short)."""
        with file, self.reading() as chunk_size:
            file.seek(offset)
            while length > 0:
                data = file.read(min(chunk_size(), length))
                if not data:
                    raise Unavailable(f"{getattr(file, 'name', 'a blob file')} is shorter than expected")
                length -= len(data)
                yield data


READERS = ReadBudget()  # this process's: the clients of fills in flight and of cached files alike
