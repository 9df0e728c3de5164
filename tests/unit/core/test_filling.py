from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.digest import Digest
from core.errors import DigestMismatch
from core.filling import DeadlinePassed, copy_blob, write_blob
from core.ports import UpstreamBlob
from pullthrough_adapters.local.blob_store import FileBlobStore


@contextmanager
def source(data: bytes, declared: int | None = None):
    yield UpstreamBlob(len(data) if declared is None else declared, iter([data[:10], data[10:]]))


def test_copy_verifies_size_and_digest(tmp_path: Path):
    store = FileBlobStore(tmp_path)
    data = b"0123456789abcdef"
    assert copy_blob(lambda: source(data), store.writer(Digest.of(data))) == len(data)
    assert store.read(Digest.of(data)) == data
    with pytest.raises(DigestMismatch, match="of 99 bytes"):
        copy_blob(lambda: source(b"x" * 16, declared=99), store.writer(Digest.of(b"x" * 16)))
    assert not store.exists(Digest.of(b"x" * 16))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_write_stops_at_the_deadline_and_keeps_nothing(tmp_path: Path):
    store = FileBlobStore(tmp_path)
    data = b"0123456789abcdef"
    with pytest.raises(DeadlinePassed), source(data) as blob:
        write_blob(blob, store.writer(Digest.of(data)), deadline=time.monotonic() - 1)
    assert not store.exists(Digest.of(data)) and list((tmp_path / "tmp").iterdir()) == []
