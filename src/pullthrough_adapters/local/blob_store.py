"""Content-addressed files: written to a temp file, verified, fsynced, then renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from core.digest import Digest, DigestVerifier
from core.errors import DigestMismatch
from core.ports import LocalBlob

HASHED_AHEAD = 2  # chunks a writer's hashing thread may be behind its writes


class FileBlobWriter:
    """Writes one temp file of its own (created exclusively, never opened for writing by anyone else), so the bytes
    hashed on the way in are the bytes on disk; the file becomes the blob only if they match the digest.

    Each chunk is hashed in a thread of the writer's own while it is written (both let go of the GIL): a big blob
    takes as long as the slower of the two, not their sum. The same bytes object goes to both."""

    def __init__(self, final_path: Path, temp_dir: Path, digest: Digest) -> None:
        self._final_path = final_path
        fd, temp_name = tempfile.mkstemp(dir=temp_dir, prefix=f"{digest.encoded[:16]}.")
        self.temp_path = Path(temp_name)
        self._file = os.fdopen(fd, "wb")
        self._verifier = DigestVerifier(digest)
        self._written = 0
        self._hasher: ThreadPoolExecutor | None = None  # started by the second chunk: most blobs are one
        self._hashing: deque[Future[None]] = deque()

    @property
    def written(self) -> int:
        return self._written

    def write(self, chunk: bytes) -> None:
        if self._written == 0:
            self._verifier.update(chunk)
        else:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="hash")
            self._hashing.append(self._hasher.submit(self._verifier.update, chunk))
        self._file.write(chunk)
        self._written += len(chunk)
        while len(self._hashing) > HASHED_AHEAD:
            self._hashing.popleft().result()

    def flush(self) -> None:
        """Makes what was written so far readable through temp_path (the local filler streams from it)."""
        self._file.flush()

    def verify(self) -> None:
        self._hashed()
        if not self._verifier.matches():
            self.abort()
            raise DigestMismatch(f"content does not match {self._verifier.expected}")

    def commit(self) -> int:
        self._file.flush()
        self.verify()
        os.fsync(self._file.fileno())
        on_disk = os.fstat(self._file.fileno()).st_size
        self._file.close()
        if on_disk != self._verifier.size:  # cannot happen to a file only this writer writes; never store it
            self.temp_path.unlink(missing_ok=True)
            raise DigestMismatch(f"{on_disk} bytes on disk, {self._verifier.size} verified")
        self._final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp_path, self._final_path)
        _fsync_dir(self._final_path.parent)
        return self._verifier.size

    def abort(self) -> None:
        self._hashed()
        self._file.close()
        self.temp_path.unlink(missing_ok=True)

    def _hashed(self) -> None:
        """Until every chunk written is hashed; the hashing thread ends."""
        while self._hashing:
            self._hashing.popleft().result()
        if self._hasher is not None:
            self._hasher.shutdown()
            self._hasher = None


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._temp_dir = root / "tmp"
        self._temp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.encoded[:2] / digest.encoded

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: Digest) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    @property
    def temp_dir(self) -> Path:
        return self._temp_dir

    def writer(self, digest: Digest) -> FileBlobWriter:
        return FileBlobWriter(self.path(digest), self._temp_dir, digest)

    def delete(self, digests: Sequence[Digest]) -> None:
        """Unlinking is safe for readers: one that opened the file keeps reading it."""
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)

    def usage(self) -> int:
        """Bytes of the blobs stored (what --max-cache-size caps), temp files of fills in flight not counted."""
        total = 0
        for shard in (self.root / "blobs").glob("*/*"):
            with os.scandir(shard) as entries:
                total += sum(entry.stat().st_size for entry in entries if entry.is_file())
        return total

    def locate(self, digest: Digest, *, head: bool) -> LocalBlob | None:
        path = self.path(digest)
        try:
            return LocalBlob(str(path), path.stat().st_size)
        except FileNotFoundError:
            return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
