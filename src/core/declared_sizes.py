"""The sizes image manifests declare for their blobs, remembered for a while per repository, so that a fill can hold
the upstream to them: a blob body longer (or a Content-Length other) than its manifest said is refused at once."""

from __future__ import annotations

import threading
from collections import OrderedDict

from core.digest import Digest

CAPACITY = 10_000  # about 1 MB of memory; a client pulls the blobs right after their manifest


class DeclaredSizes:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._sizes: OrderedDict[tuple[str, str, Digest], int] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, scope: str, repository: str, sizes: dict[Digest, int]) -> None:
        with self._lock:
            for digest, size in sizes.items():
                self._sizes[(scope, repository, digest)] = size
                self._sizes.move_to_end((scope, repository, digest))
            while len(self._sizes) > self._capacity:
                self._sizes.popitem(last=False)

    def size(self, scope: str, repository: str, digest: Digest) -> int | None:
        with self._lock:
            return self._sizes.get((scope, repository, digest))
