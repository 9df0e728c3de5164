"""One upstream download per missing blob and repository, streamed to every waiting client while it is written.

The download runs in its own thread, so a client that disconnects neither stops it nor leaves a partial blob: the
bytes go to a temp file of the download's own that becomes the blob only once its digest is verified. Clients tail
that temp file, and the last byte of every response is held back until verification, so no client ever receives a
complete body (or range) that did not verify.

Several server processes share one data directory: a lease in the metadata store elects the one that downloads.
It names its temp file and the expected size in a small pointer file, and the other processes follow the temp file
the same way. A fill belongs to one repository of one rule (the FillJob's lease key): nobody else joins it.

Every fill is bounded: by the size its manifest declared or the upstream announced, by the rule's maximum, by the
free disk space, and by a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import DigestMismatch, RegistryError, Unavailable
from core.filling import SizeBound
from core.ports import BlobBody, BlobSource, FillJob, FillState, LocalBlob, StreamedBlob
from core.reading import READERS
from pullthrough_adapters.local.blob_store import FileBlobStore, FileBlobWriter

log = logging.getLogger(__name__)

ANNOUNCE_EVERY = 1 << 20  # readers are woken per MiB written, not per network packet
STALL_TIMEOUT_SECONDS = 120.0  # a reader gives up when the download makes no progress for this long
LEASE_SECONDS = 60.0  # another process takes over a fill whose holder stopped renewing for this long
RENEW_EVERY_SECONDS = 20.0
FOLLOW_POLL_SECONDS = 0.02
FOLLOW_START_SECONDS = 30.0  # how long a follower waits for the holder's upstream to answer
# A fill may take this long plus a second per MiB (a floor of 1 MiB/s for the slowest upstream worth waiting for).
FILL_BASE_SECONDS = 300.0
FILL_SECONDS_PER_BYTE = 1.0 / (1 << 20)
MIN_FREE_BYTES = 512 << 20  # a fill never takes the disk below this
SPACE_CHECK_EVERY = 64 << 20
# A live fill writes its temp file at least every few minutes, or its reads time out and it removes the file: one
# untouched for an hour belongs to a process that was killed mid-fill.
ABANDONED_AFTER_SECONDS = 3600.0
POINTER_PREFIX = "fill-"


def fill_deadline(size: int | None) -> float:
    """When a fill of `size` bytes (unknown: the base only) must be done, on time.monotonic's clock."""
    return time.monotonic() + FILL_BASE_SECONDS + (size or 0) * FILL_SECONDS_PER_BYTE


@dataclass(frozen=True, slots=True)
class _Pointer:
    """What the holder of a fill lease tells other processes: its temp file, and the size it will have."""

    temp_path: Path
    size: int


class _Fill:
    """The download this process runs, holding the fill lease."""

    def __init__(
        self, job: FillJob, store: FileBlobStore, pointer: Path, renew: Callable[[], bool], min_free_bytes: int
    ) -> None:
        self.job = job
        self._store = store
        self._pointer = pointer
        self._renew = renew
        self._min_free_bytes = min_free_bytes
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
                bound = SizeBound.of(self.job, upstream_blob.size)
                self._check_space(upstream_blob.size or 0)
                writer = self._store.writer(self.job.digest)
                try:
                    if upstream_blob.size is not None:  # followers in other processes learn of the fill here
                        _publish(self._pointer, _Pointer(writer.temp_path, upstream_blob.size))
                    self._update(size=upstream_blob.size, writer=writer)
                    size = self._copy(upstream_blob.chunks, writer, bound, upstream_blob.size)
                    # Recorded before the pointer goes: a follower takes a vanished pointer of an unrecorded blob
                    # for a failed fill.
                    on_commit(size)
                except BaseException:
                    writer.abort()
                    raise
                finally:
                    _withdraw(self._pointer, writer.temp_path)
            self._update(committed=True)
        except RegistryError as exc:
            self._fail(exc)
        except Exception as exc:  # the upstream adapter translates its errors; anything else is a bug, logged
            log.exception("filling %s failed", self.job.digest)
            self._fail(Unavailable(f"filling {self.job.digest} failed: {type(exc).__name__}"))
        finally:
            on_done()

    def _copy(self, chunks: Iterator[bytes], writer: FileBlobWriter, bound: SizeBound, size: int | None) -> int:
        deadline = fill_deadline(size)
        renewed = time.monotonic()
        space_checked = 0
        for chunk in chunks:
            bound.check(writer.written + len(chunk))
            writer.write(chunk)
            if writer.written - self.written >= ANNOUNCE_EVERY:
                self._announce(writer)
            now = time.monotonic()
            # on every chunk, however slowly they come: a lapsed lease lets another process start over
            if now - renewed > RENEW_EVERY_SECONDS:
                if not self._renew():
                    raise Unavailable(f"the download of {self.job.digest} lost its lease; retry")
                renewed = now
            if now > deadline:
                raise Unavailable(f"the download of {self.job.digest} did not finish in time")
            if size is None and writer.written - space_checked >= SPACE_CHECK_EVERY:
                self._check_space(0)
                space_checked = writer.written
        self._announce(writer)
        if size is not None and writer.written != size:
            raise DigestMismatch(f"upstream sent {writer.written} of {size} bytes")
        writer.verify()
        # Readers may finish now; making the blob durable (fsync, rename) does not hold them up.
        self._update(verified=True)
        return writer.commit()

    def _check_space(self, needed: int) -> None:
        free = shutil.disk_usage(self._store.temp_dir).free
        if free - needed < self._min_free_bytes:
            raise Unavailable(f"not enough free disk space for {self.job.digest} ({needed} bytes, {free} free)")

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
            log.warning("fill of %s failed after %d bytes: %s", self.job.digest, self.written, error.message)
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
        assert self.writer is not None
        end = offset + length
        # Opened while the fill runs or once it is renamed into place: an open file survives both.
        file = _open_first(self.writer.temp_path, self._store.path(self.job.digest))
        if file is None:  # neither: the fill failed and removed its temp file, and says so once it has cleaned up
            self.wait_committed()  # raises the fill's own error
            file = _open_first(self._store.path(self.job.digest))
            if file is None:
                raise Unavailable(f"fill of {self.job.digest} vanished")
        with file, READERS.reading() as chunk_size:
            file.seek(offset)
            position = offset
            while position < end:
                readable = self._wait_readable(position, end)
                data = file.read(min(chunk_size(), readable - position))
                position += len(data)
                yield data

    def _wait_readable(self, position: int, end: int) -> int:
        with self._changed:
            while True:
                if self.error is not None:
                    raise self.error
                # The last byte of what this client asked for waits until the whole blob is verified.
                limit = end if self.verified else min(self.written, end - 1)
                if limit > position:
                    return limit
                if not self._changed.wait(STALL_TIMEOUT_SECONDS):
                    raise Unavailable(f"download of {self.job.digest} stalled")


class _Follower:
    """A fill another process runs: read its temp file as it grows; the last byte of the response once the blob is
    verified and recorded for this repository (the same file, renamed into place)."""

    def __init__(
        self, store: FileBlobStore, job: FillJob, pointer_path: Path, pointer: _Pointer, committed: Callable[[], bool]
    ) -> None:
        self._store = store
        self._job = job
        self._pointer_path = pointer_path
        self._pointer = pointer
        self._committed = committed

    def chunks(self, offset: int, length: int) -> Iterator[bytes]:
        end = offset + length
        try:
            file = self._pointer.temp_path.open("rb")
        except FileNotFoundError:
            file = None
        if file is None:  # renamed into place (recorded, or about to be) or failed before this follower opened it
            waited_since = time.monotonic()
            while not self._stored():
                self._check_stall(waited_since)
                time.sleep(FOLLOW_POLL_SECONDS)
            yield from READERS.file_chunks(self._store.path(self._job.digest).open("rb"), offset, length)
            return
        with file, READERS.reading() as chunk_size:
            file.seek(offset)
            position, progressed, done = offset, time.monotonic(), False
            while position < end:
                limit = end if done else min(os.fstat(file.fileno()).st_size, end - 1)
                if limit > position:
                    data = file.read(min(chunk_size(), limit - position))
                    position += len(data)
                    progressed = time.monotonic()
                    yield data
                elif self._stored():
                    done = True
                else:
                    self._check_stall(progressed)
                    time.sleep(FOLLOW_POLL_SECONDS)

    def _stored(self) -> bool:
        """Whether the holder stored and recorded the blob; Unavailable once it is known to have failed. The holder
        records before it withdraws its pointer, so a pointer gone (or another fill's) with no record is a failure:
        the record is asked again after the pointer, since it may have come in between."""
        if self._committed():
            return True
        if _read_pointer(self._pointer_path) != self._pointer and not self._committed():
            raise Unavailable(f"the download of {self._job.digest} failed in another server process")
        return False

    def _check_stall(self, since: float) -> None:
        if time.monotonic() - since > STALL_TIMEOUT_SECONDS:
            raise Unavailable(f"download of {self._job.digest} stalled")


class TeeFiller:
    def __init__(self, store: FileBlobStore, metadata: FillState, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self._store = store
        self._metadata = metadata
        self._min_free_bytes = min_free_bytes
        self._fills: dict[str, _Fill] = {}
        self._lock = threading.Lock()

    def fill(self, job: FillJob, source: BlobSource, on_commit: Callable[[int], None]) -> BlobBody:
        deadline = time.monotonic() + FOLLOW_START_SECONDS
        pointer_path = self._pointer_path(job)
        while True:
            with self._lock:
                fill = self._fills.get(job.lease_key)
                if fill is not None and fill.error is not None:  # failed, and about to let go of the lease
                    fill = None
                elif fill is None:
                    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
                    if self._metadata.acquire_lease(job.lease_key, owner, LEASE_SECONDS):
                        landed = self._landed(job)
                        if landed is not None:  # the holder before us finished since the caller looked
                            self._metadata.release_lease(job.lease_key, owner)
                            return landed
                        fill = self._start(job, owner, pointer_path, source, on_commit)
            if fill is not None:
                return self._serve(fill)
            pointer = _read_pointer(pointer_path)
            if pointer is not None:
                follower = _Follower(self._store, job, pointer_path, pointer, lambda: self._landed(job) is not None)
                return StreamedBlob(pointer.size, follower.chunks)
            if time.monotonic() > deadline:
                raise Unavailable(f"{job.digest} is being downloaded by another server process; retry", retry_after=2)
            time.sleep(FOLLOW_POLL_SECONDS)

    def _landed(self, job: FillJob) -> LocalBlob | None:
        """The blob, if a fill of this job already stored and recorded it."""
        size = self._metadata.get_blob(job.scope, job.repository, job.digest)
        stored = self._store.locate(job.digest, head=False) if size is not None else None
        return stored if stored is not None and stored.size == size else None

    def _pointer_path(self, job: FillJob) -> Path:
        return self._store.temp_dir / f"{POINTER_PREFIX}{hashlib.sha256(job.lease_key.encode()).hexdigest()[:40]}.json"

    def _start(
        self, job: FillJob, owner: str, pointer: Path, source: BlobSource, on_commit: Callable[[int], None]
    ) -> _Fill:
        def renew() -> bool:
            return self._metadata.acquire_lease(job.lease_key, owner, LEASE_SECONDS)

        fill = self._fills[job.lease_key] = _Fill(job, self._store, pointer, renew, self._min_free_bytes)

        def done() -> None:
            self._metadata.release_lease(job.lease_key, owner)
            with self._lock:
                if self._fills.get(job.lease_key) is fill:
                    del self._fills[job.lease_key]

        threading.Thread(target=fill.run, args=(source, on_commit, done), daemon=True).start()
        return fill

    def drain(self, timeout: float) -> bool:
        """Until the fills this process runs have finished, for at most `timeout` seconds: a server shutting down
        neither kills a download that is past its last byte nor leaves its temp file behind. True if none is left."""
        deadline = time.monotonic() + timeout
        while self._fills and time.monotonic() < deadline:
            time.sleep(FOLLOW_POLL_SECONDS)
        return not self._fills

    def _serve(self, fill: _Fill) -> BlobBody:
        fill.wait_started()
        if fill.size is None:  # no Content-Length from the upstream: serve once complete
            fill.wait_committed()
            stored = self._store.locate(fill.job.digest, head=False)
            assert stored is not None
            return stored
        return StreamedBlob(fill.size, fill.chunks, fill.wait_committed)


def remove_abandoned(store: FileBlobStore, *, older_than: float = ABANDONED_AFTER_SECONDS) -> int:
    """Delete what server processes killed mid-fill left in the temp directory: files nobody wrote for `older_than`
    seconds, and pointers as old whose temp file is gone (a live fill's pointer may be older: its temp file is not).
    Returns the bytes freed."""
    cutoff = time.time() - older_than
    freed = 0
    pointers = []
    for path in store.temp_dir.iterdir():
        if path.name.startswith(POINTER_PREFIX) and path.suffix == ".json":
            pointers.append(path)
            continue
        freed += _unlink_if_older(path, cutoff)
    for path in pointers:
        pointer = _read_pointer(path)
        if pointer is None or not pointer.temp_path.exists():
            freed += _unlink_if_older(path, cutoff)
    return freed


def _unlink_if_older(path: Path, cutoff: float) -> int:
    try:
        found = path.stat()
        if found.st_mtime >= cutoff:
            return 0
        path.unlink()
    except FileNotFoundError:  # its fill finished or cleaned up meanwhile
        return 0
    log.info("removed the abandoned %s (%d bytes)", path.name, found.st_size)
    return found.st_size


def _publish(path: Path, pointer: _Pointer) -> None:
    staging = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
    staging.write_text(json.dumps({"temp": pointer.temp_path.name, "size": pointer.size}))
    staging.replace(path)


def _read_pointer(path: Path) -> _Pointer | None:
    try:
        document = json.loads(path.read_text())
        return _Pointer(path.parent / str(document["temp"]), int(document["size"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None  # not there yet, gone, or being replaced


def _withdraw(path: Path, temp_path: Path) -> None:
    """Remove the pointer if it still names this fill's temp file (a fill that took over wrote its own)."""
    pointer = _read_pointer(path)
    if pointer is not None and pointer.temp_path == temp_path:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _open_first(*paths: Path) -> BinaryIO | None:
    for path in paths:
        try:
            return path.open("rb")
        except FileNotFoundError:
            continue
    return None
