"""One upstream download per missing blob, streamed to every waiting client while it is written to disk.

The download runs in its own thread, so a client that disconnects neither stops it nor leaves a partial blob: the
bytes go to a temp file that becomes the blob only once its digest is verified. Clients tail that temp file, and the
last byte is held back until verification, so no client ever receives a complete body that did not verify.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from adapters.local.blob_store import FileBlobStore, FileBlobWriter
from core.digest import Digest
from core.errors import DigestMismatch, RegistryError, Unavailable
from core.ports import BlobBody, BlobSource, FillJob, LocalBlob, StreamedBlob

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
ANNOUNCE_EVERY = 1 << 20  # readers are woken per MiB written, not per network packet
STALL_TIMEOUT_SECONDS = 120.0  # a reader gives up when the download makes no progress for this long


class _Fill:
    def __init__(self, digest: Digest, store: FileBlobStore) -> None:
        self.digest = digest
        self._store = store
        self._changed = threading.Condition()
        self.size: int | None = None
        self.writer: FileBlobWriter | None = None
        self.written = 0
        self.verified = False
        self.committed = False
        self.error: RegistryError | None = None

    # -- the download thread --------------------------------------------------------------------------------------

    def run(self, source: BlobSource, on_commit: Callable[[int], None], on_done: Callable[[], None]) -> None:
        try:
            with source() as upstream_blob:
                writer = self._store.writer(self.digest)
                self._update(size=upstream_blob.size, writer=writer)
                try:
                    for chunk in upstream_blob.chunks:
                        writer.write(chunk)
                        if writer.written - self.written >= ANNOUNCE_EVERY:
                            self._announce(writer)
                    self._announce(writer)
                    if upstream_blob.size is not None and writer.written != upstream_blob.size:
                        raise DigestMismatch(f"upstream sent {writer.written} of {upstream_blob.size} bytes")
                    writer.verify()
                    # Readers may finish now; making the blob durable (fsync, rename) does not hold them up.
                    self._update(verified=True)
                    size = writer.commit()
                except BaseException:
                    writer.abort()
                    raise
            on_commit(size)
            self._update(committed=True)
        except RegistryError as exc:
            self._fail(exc)
        except Exception as exc:  # the upstream adapter translates its errors; anything else is a bug, logged
            log.exception("filling %s failed", self.digest)
            self._fail(Unavailable(f"filling {self.digest} failed: {type(exc).__name__}"))
        finally:
            on_done()

    def _announce(self, writer: FileBlobWriter) -> None:
        writer.flush()
        self._update(written=writer.written)

    def _update(self, **changes: object) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self._changed.notify_all()

    def _fail(self, error: RegistryError) -> None:
        if self.writer is not None:
            log.warning("fill of %s failed after %d bytes: %s", self.digest, self.written, error.message)
        self._update(error=error)

    # -- clients --------------------------------------------------------------------------------------------------

    def wait_started(self) -> None:
        """Until the upstream answered: its errors (404, 429, ...) reach the client as a proper response."""
        with self._changed:
            while self.writer is None and self.error is None and not self.committed:
                self._changed.wait()
            if self.error is not None and self.writer is None:
                raise self.error

    def wait_committed(self) -> None:
        with self._changed:
            while not self.committed and self.error is None:
                self._changed.wait()
            if self.error is not None:
                raise self.error

    def chunks(self, offset: int, length: int) -> Iterator[bytes]:
        assert self.writer is not None and self.size is not None
        end = offset + length
        with self._open() as file:
            file.seek(offset)
            position = offset
            while position < end:
                readable = self._wait_readable(position, end)
                data = file.read(min(READ_CHUNK, readable - position))
                position += len(data)
                yield data

    def _open(self) -> BinaryIO:
        """The temp file while it is being written, the blob once renamed into place (an open file survives both)."""
        assert self.writer is not None
        for path in (self.writer.temp_path, self._store.path(self.digest)):
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue
        raise self.error or Unavailable(f"fill of {self.digest} vanished")

    def _wait_readable(self, position: int, end: int) -> int:
        with self._changed:
            while True:
                if self.error is not None:
                    raise self.error
                # Hold back the final byte until the digest is verified.
                limit = end if self.verified else min(self.written, end, self.size - 1)  # type: ignore[operator]
                if limit > position:
                    return limit
                if not self._changed.wait(STALL_TIMEOUT_SECONDS):
                    raise Unavailable(f"download of {self.digest} stalled")


class TeeFiller:
    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._fills: dict[Digest, _Fill] = {}
        self._lock = threading.Lock()

    def fill(self, job: FillJob, source: BlobSource, on_commit: Callable[[int], None]) -> BlobBody:
        digest = job.digest
        with self._lock:
            fill = self._fills.get(digest)
            if fill is None:
                stored = self._store.locate(digest, head=False)
                if stored is not None:  # a fill finished since the caller looked
                    on_commit(stored.size)
                    return stored
                fill = self._fills[digest] = _Fill(digest, self._store)
                thread = threading.Thread(
                    target=fill.run, args=(source, on_commit, lambda: self._forget(digest)), daemon=True
                )
                thread.start()
        fill.wait_started()
        if fill.size is None:  # no Content-Length from the upstream: serve once complete
            return self._wait_stored(fill)
        return StreamedBlob(fill.size, fill.chunks)

    def _wait_stored(self, fill: _Fill) -> LocalBlob:
        fill.wait_committed()
        stored = self._store.locate(fill.digest, head=False)
        assert stored is not None
        return stored

    def _forget(self, digest: Digest) -> None:
        with self._lock:
            self._fills.pop(digest, None)
