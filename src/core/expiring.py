"""A bounded memory of answers that each stand for a while: the least recently used go first when it is full."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """Thread-safe (the local server answers from several threads); `max_items` 0 keeps nothing."""

    def __init__(self, max_items: int, max_age_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_items = max_items
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            kept = self._items.get(key)
            if kept is None:
                return None
            value, remembered_at = kept
            if self._clock() - remembered_at >= self._max_age:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = (value, self._clock())
            self._items.move_to_end(key)
            while len(self._items) > self._max_items:
                self._items.popitem(last=False)

    def change(self, key: K, change: Callable[[V], V]) -> None:
        """The value kept for `key`, if any, changed; its age unchanged."""
        with self._lock:
            kept = self._items.get(key)
            if kept is not None:
                self._items[key] = (change(kept[0]), kept[1])
