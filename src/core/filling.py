"""Copying one blob from an upstream into a BlobStore, verified and bounded: the steps every filler shares."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.digest import Digest
from core.errors import Denied, DigestMismatch
from core.ports import BlobSource, BlobStore, BlobWriter, FillJob, UpstreamBlob


class DeadlinePassed(Exception):
    """The copy did not finish in time; nothing was stored."""


@dataclass(frozen=True, slots=True)
class SizeBound:
    """The most bytes an upstream body may have, and whether that is the rule's maximum or a size someone
    announced (the upstream's Content-Length, the image manifest's descriptor)."""

    limit: int | None
    rule_maximum: bool = False

    @classmethod
    def of(cls, job: FillJob | None, announced: int | None) -> SizeBound:
        """Refuses at once a Content-Length other than the size the manifest declared, or over the rule's maximum."""
        if job is None:
            return cls(announced)
        if job.expected_size is not None and announced is not None and announced != job.expected_size:
            raise DigestMismatch(f"upstream announces {announced} bytes; the manifest declares {job.expected_size}")
        known = announced if announced is not None else job.expected_size
        if known is not None and job.max_size is not None and known > job.max_size:
            raise Denied(f"a blob of {known} bytes is over the rule's max_blob_bytes ({job.max_size})")
        return cls(known) if known is not None else cls(job.max_size, rule_maximum=True)

    def check(self, written: int) -> None:
        """Stops a body that runs past its bound before more of it is written."""
        if self.limit is None or written <= self.limit:
            return
        if self.rule_maximum:
            raise Denied(f"the blob is over the rule's max_blob_bytes ({self.limit})")
        raise DigestMismatch(f"upstream sent more than the {self.limit} bytes announced")


def copy_blob(source: BlobSource, writer: BlobWriter, job: FillJob | None = None) -> int:
    """Stream the upstream blob into `writer`; it becomes visible only if size and digest match."""
    try:
        with source() as upstream_blob:
            return write_blob(upstream_blob, writer, job=job)
    except BaseException:
        writer.abort()
        raise


def store_bytes(store: BlobStore, digest: Digest, data: bytes) -> int:
    """Bytes already in memory (a manifest) into `store`, verified like any blob: visible only if they match."""
    return write_blob(UpstreamBlob(len(data), iter((data,))), store.writer(digest))


def write_blob(
    upstream_blob: UpstreamBlob, writer: BlobWriter, deadline: float | None = None, job: FillJob | None = None
) -> int:
    """Like copy_blob, for a blob already open; past `deadline` (time.monotonic) it aborts with DeadlinePassed."""
    try:
        bound = SizeBound.of(job, upstream_blob.size)
        written = 0
        for chunk in upstream_blob.chunks:
            written += len(chunk)
            bound.check(written)
            writer.write(chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed()
        if upstream_blob.size is not None and written != upstream_blob.size:
            raise DigestMismatch(f"upstream sent {written} of {upstream_blob.size} bytes")
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
