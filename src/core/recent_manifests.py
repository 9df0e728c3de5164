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
from core.expiring import Expiring
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
        self._lock = threading.Lock()  # the local server answers from several threads
        self._records: Expiring[RecordKey, ManifestRecord] = Expiring(max_records, max_age_seconds, clock)
        self._data: OrderedDict[Digest, bytes] = OrderedDict()
        self._data_bytes = 0

    @classmethod
    def disabled(cls) -> RecentManifests:
        """Keeps nothing: every manifest is read from the stores."""
        return cls(max_bytes=0, max_records=0)

    def record(self, scope: str, repository: str, digest: Digest) -> ManifestRecord | None:
        return self._records.get((scope, repository, digest))

    def remember_record(self, scope: str, repository: str, record: ManifestRecord) -> None:
        self._records.put((scope, repository, record.digest), record)

    def pulled(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        """A pull by digest was recorded: the next is due from this one (the record's age is unchanged)."""
        self._records.change((scope, repository, digest), lambda kept: dataclasses.replace(kept, pulled_at=pulled_at))

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
