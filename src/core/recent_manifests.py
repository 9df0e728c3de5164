"""Manifests by digest, kept in memory per process: a container answers a repeated pull by digest without asking the
metadata store or the blob store again.

A digest names its bytes forever, so the bytes are kept by digest alone. Whether a repository has a manifest is the
metadata's to say, so that is kept per rule scope and repository, and only for `max_age_seconds`: content the
lifecycle removed, or a repository that lost it, is served from here for at most that long. Tags are never kept:
they move.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from core.digest import Digest
from core.ports import ManifestRecord

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_AGE_SECONDS = 600.0

RecordKey = tuple[str, str, Digest]


class RecentManifests:
    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_records = max_records
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()  # the local server answers from several threads
        self._records: OrderedDict[RecordKey, tuple[ManifestRecord, float]] = OrderedDict()
        self._data: OrderedDict[Digest, bytes] = OrderedDict()
        self._data_bytes = 0

    @classmethod
    def disabled(cls) -> RecentManifests:
        """Keeps nothing: every manifest is read from the stores."""
        return cls(max_bytes=0, max_records=0)

    def record(self, scope: str, repository: str, digest: Digest) -> ManifestRecord | None:
        key = (scope, repository, digest)
        with self._lock:
            kept = self._records.get(key)
            if kept is None:
                return None
            record, remembered_at = kept
            if self._clock() - remembered_at >= self._max_age:
                del self._records[key]
                return None
            self._records.move_to_end(key)
            return record

    def remember_record(self, scope: str, repository: str, record: ManifestRecord) -> None:
        key = (scope, repository, record.digest)
        with self._lock:
            self._records[key] = (record, self._clock())
            self._records.move_to_end(key)
            while len(self._records) > self._max_records:
                self._records.popitem(last=False)

    def pulled(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        """A pull by digest was recorded: the next is due from this one (the record's age is unchanged)."""
        key = (scope, repository, digest)
        with self._lock:
            kept = self._records.get(key)
            if kept is not None:
                self._records[key] = (dataclasses.replace(kept[0], pulled_at=pulled_at), kept[1])

    def data(self, digest: Digest) -> bytes | None:
        with self._lock:
            data = self._data.get(digest)
            if data is not None:
                self._data.move_to_end(digest)
            return data

    def remember_data(self, digest: Digest, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        with self._lock:
            if digest in self._data:
                return
            self._data[digest] = data
            self._data_bytes += len(data)
            while self._data_bytes > self._max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._data_bytes -= len(evicted)
