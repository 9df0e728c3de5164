"""One upstream download per missing blob, streamed to every waiting client while it is written to disk.

The download runs in its own thread, so a client that disconnects neither stops it nor leaves a partial blob: the
bytes go to a temp file that becomes the blob only once its digest is verified. Clients tail that temp file, and the
last byte is held back until verification, so no client ever receives a complete body that did not verify.

Several server processes share one data directory: a lease in the metadata store elects the one that downloads,
and the others follow its temp file (a well-known name, with the expected size beside it) the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from adapters.local.blob_store import FileBlobStore, FileBlobWriter
from core.digest import Digest
from core.errors import DigestMismatch, RegistryError, Unavailable
from core.ports import BlobBody, BlobSource, FillJob, MetadataStore, StreamedBlob

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
ANNOUNCE_EVERY = 1 << 20  # readers are woken per MiB written, not per network packet
STALL_TIMEOUT_SECONDS = 120.0  # a reader gives up when the download makes no progress for this long
LEASE_SECONDS = 60.0  # another process takes over a fill whose holder stopped renewing for this long
RENEW_EVERY_SECONDS = 20.0
FOLLOW_POLL_SECONDS = 0.02
FOLLOW_START_SECONDS = 30.0  # how long a follower waits for the holder's upstream to answer


def size_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".size")


class _Fill:
    """The download this process runs, holding the fill lease."""

    def __init__(self, digest: Digest, store: FileBlobStore, renew: Callable[[], bool]) -> None:
        self.digest = digest
        self._store = store
        self._renew = renew
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
                writer = self._store.shared_writer(self.digest)
                sizes = size_path(writer.temp_path)
                if upstream_blob.size is not None:  # followers in other processes learn the size from here
                    sizes.with_suffix(".tmp").write_text(str(upstream_blob.size))
                    sizes.with_suffix(".tmp").replace(sizes)
                self._update(size=upstream_blob.size, writer=writer)
                renewed = time.monotonic()
                try:
                    for chunk in upstream_blob.chunks:
                        writer.write(chunk)
                        if writer.written - self.written >= ANNOUNCE_EVERY:
                            self._announce(writer)
                        # on every chunk, however slowly they come: a lapsed lease lets another process start over
                        if time.monotonic() - renewed > RENEW_EVERY_SECONDS:
                            if not self._renew():
                                raise Unavailable(f"the download of {self.digest} lost its lease; retry")
                            renewed = time.monotonic()
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
                finally:
                    sizes.unlink(missing_ok=True)
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
        # Opened while the fill runs or once it is renamed into place: an open file survives both.
        file = _open_first(self.writer.temp_path, self._store.path(self.digest))
        if file is None:  # neither: the fill failed and removed its temp file
            raise self.error or Unavailable(f"fill of {self.digest} vanished")
        with file:
            file.seek(offset)
            position = offset
            while position < end:
                readable = self._wait_readable(position, end)
                data = file.read(min(READ_CHUNK, readable - position))
                position += len(data)
                yield data

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


class _Follower:
    """A fill another process runs: read its temp file as it grows; the last byte once the blob is in place."""

    def __init__(self, store: FileBlobStore, digest: Digest, size: int) -> None:
        self._store = store
        self._digest = digest
        self._size = size

    def chunks(self, offset: int, length: int) -> Iterator[bytes]:
        partial, final = self._store.partial_path(self._digest), self._store.path(self._digest)
        end = offset + length
        file = _open_first(partial, final)
        if file is None:
            raise Unavailable(f"the download of {self._digest} failed in another server process")
        with file:
            file.seek(offset)
            position, progressed = offset, time.monotonic()
            while position < end:
                done = final.exists()
                limit = end if done else min(os.fstat(file.fileno()).st_size, end, self._size - 1)
                if limit > position:
                    data = file.read(min(READ_CHUNK, limit - position))
                    position += len(data)
                    progressed = time.monotonic()
                    yield data
                elif not done and not partial.exists():
                    raise Unavailable(f"the download of {self._digest} failed in another server process")
                elif time.monotonic() - progressed > STALL_TIMEOUT_SECONDS:
                    raise Unavailable(f"download of {self._digest} stalled")
                else:
                    time.sleep(FOLLOW_POLL_SECONDS)


def _open_first(*paths: Path) -> BinaryIO | None:
    for path in paths:
        try:
            return path.open("rb")
        except FileNotFoundError:
            continue
    return None


class TeeFiller:
    def __init__(self, store: FileBlobStore, metadata: MetadataStore) -> None:
        self._store = store
        self._metadata = metadata
        self._fills: dict[Digest, _Fill] = {}
        self._lock = threading.Lock()

    def fill(self, job: FillJob, source: BlobSource, on_commit: Callable[[int], None]) -> BlobBody:
        deadline = time.monotonic() + FOLLOW_START_SECONDS
        while True:
            with self._lock:
                fill = self._fills.get(job.digest)
                if fill is not None and fill.error is not None:  # failed, and about to let go of the lease
                    fill = None
                elif fill is None:
                    stored = self._store.locate(job.digest, head=False)
                    if stored is not None:  # a fill finished since the caller looked
                        on_commit(stored.size)
                        return stored
                    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
                    if self._metadata.acquire_lease(job.lease_key, owner, LEASE_SECONDS):
                        fill = self._start(job, owner, source, on_commit)
            if fill is not None:
                return self._serve(fill)
            try:
                size = int(size_path(self._store.partial_path(job.digest)).read_text())
                return StreamedBlob(size, _Follower(self._store, job.digest, size).chunks)
            except (FileNotFoundError, ValueError):
                pass  # the other process has not heard from the upstream yet
            if time.monotonic() > deadline:
                raise Unavailable(f"{job.digest} is being downloaded by another server process; retry", retry_after=2)
            time.sleep(FOLLOW_POLL_SECONDS)

    def _start(self, job: FillJob, owner: str, source: BlobSource, on_commit: Callable[[int], None]) -> _Fill:
        def renew() -> bool:
            return self._metadata.acquire_lease(job.lease_key, owner, LEASE_SECONDS)

        fill = self._fills[job.digest] = _Fill(job.digest, self._store, renew)

        def done() -> None:
            self._metadata.release_lease(job.lease_key, owner)
            with self._lock:
                if self._fills.get(job.digest) is fill:
                    del self._fills[job.digest]

        threading.Thread(target=fill.run, args=(source, on_commit, done), daemon=True).start()
        return fill

    def _serve(self, fill: _Fill) -> BlobBody:
        fill.wait_started()
        if fill.size is None:  # no Content-Length from the upstream: serve once complete
            fill.wait_committed()
            stored = self._store.locate(fill.digest, head=False)
            assert stored is not None
            return stored
        return StreamedBlob(fill.size, fill.chunks, fill.wait_committed)
