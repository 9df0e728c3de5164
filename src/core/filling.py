"""Copying one blob from an upstream into a BlobStore, verified: the step every filler shares."""

from __future__ import annotations

import time

from core.digest import Digest
from core.errors import DigestMismatch
from core.ports import BlobSource, BlobStore, BlobWriter, UpstreamBlob


class DeadlinePassed(Exception):
    """The copy did not finish in time; nothing was stored."""


def copy_blob(source: BlobSource, writer: BlobWriter) -> int:
    """Stream the upstream blob into `writer`; it becomes visible only if size and digest match."""
    try:
        with source() as upstream_blob:
            return write_blob(upstream_blob, writer)
    except BaseException:
        writer.abort()
        raise


def store_bytes(store: BlobStore, digest: Digest, data: bytes) -> int:
    """Bytes already in memory (a manifest) into `store`, verified like any blob: visible only if they match."""
    return write_blob(UpstreamBlob(len(data), iter((data,))), store.writer(digest))


def write_blob(upstream_blob: UpstreamBlob, writer: BlobWriter, deadline: float | None = None) -> int:
    """Like copy_blob, for a blob already open; past `deadline` (time.monotonic) it aborts with DeadlinePassed."""
    try:
        written = 0
        for chunk in upstream_blob.chunks:
            writer.write(chunk)
            written += len(chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed()
        if upstream_blob.size is not None and written != upstream_blob.size:
            raise DigestMismatch(f"upstream sent {written} of {upstream_blob.size} bytes")
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
