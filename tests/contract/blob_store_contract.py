"""What every BlobStore must do; each backend's test class inherits this and provides a `store` fixture."""

from __future__ import annotations

import pytest

from core.digest import Digest
from core.errors import DigestMismatch
from core.filling import store_bytes
from core.ports import BlobStore, LocalBlob, Redirect

DATA = b"some content" * 1000


class BlobStoreContract:
    def test_missing_blob(self, store: BlobStore):
        digest = Digest.of(b"absent")
        assert not store.exists(digest)
        assert store.read(digest) is None
        # a store that cannot tell without a round trip may redirect; the service asks its metadata first
        assert isinstance(store.locate(digest, head=False), Redirect | None)

    def test_put_and_read(self, store: BlobStore):
        digest = Digest.of(DATA)
        store_bytes(store, digest, DATA)
        assert store.exists(digest)
        assert store.read(digest) == DATA

    def test_put_refuses_content_that_does_not_match(self, store: BlobStore):
        digest = Digest.of(DATA)
        with pytest.raises(DigestMismatch):
            store_bytes(store, digest, DATA + b"!")
        assert not store.exists(digest)

    def test_streamed_write_becomes_visible_only_on_commit(self, store: BlobStore):
        digest = Digest.of(DATA)
        writer = store.writer(digest)
        writer.write(DATA[:100])
        assert not store.exists(digest)
        writer.write(DATA[100:])
        assert not store.exists(digest)
        assert writer.commit() == len(DATA)
        assert store.read(digest) == DATA

    def test_streamed_write_of_wrong_content_is_discarded(self, store: BlobStore):
        digest = Digest.of(DATA)
        writer = store.writer(digest)
        writer.write(DATA[:-1])
        with pytest.raises(DigestMismatch):
            writer.commit()
        assert not store.exists(digest)

    def test_many_chunks_hash_as_one_stream_in_their_order(self, store: BlobStore):
        """Writers may hash beside writing: the chunks must still be hashed in the order written."""
        data = bytes(range(256)) * 400
        chunks = [data[start : start + 97] for start in range(0, len(data), 97)]
        writer = store.writer(Digest.of(data))
        for chunk in chunks:
            writer.write(chunk)
        assert writer.commit() == len(data)
        assert store.read(Digest.of(data)) == data
        swapped = [chunks[1], chunks[0], *chunks[2:]]
        digest = Digest.of(bytes(reversed(data)))  # a name the swapped stream does not hash to either
        writer = store.writer(digest)
        for chunk in swapped:
            writer.write(chunk)
        with pytest.raises(DigestMismatch):
            writer.commit()
        assert not store.exists(digest)
        writer = store.writer(Digest.of(b"".join(swapped)))
        for chunk in swapped:
            writer.write(chunk)
        assert writer.commit() == len(data)
        writer = store.writer(Digest.of(data[::-1]))
        for chunk in chunks:
            writer.write(chunk)
        writer.abort()
        assert not store.exists(Digest.of(data[::-1]))

    def test_aborted_write_leaves_nothing(self, store: BlobStore):
        digest = Digest.of(DATA)
        writer = store.writer(digest)
        writer.write(DATA)
        writer.abort()
        assert not store.exists(digest)

    def test_rewriting_the_same_content_is_harmless(self, store: BlobStore):
        digest = Digest.of(DATA)
        store_bytes(store, digest, DATA)
        store_bytes(store, digest, DATA)
        assert store.read(digest) == DATA

    def test_locate_tells_how_to_get_the_bytes(self, store: BlobStore):
        digest = Digest.of(DATA)
        store_bytes(store, digest, DATA)
        for head in (False, True):
            located = store.locate(digest, head=head)
            assert isinstance(located, LocalBlob | Redirect)
            if isinstance(located, LocalBlob):
                assert located.size == len(DATA)
                with open(located.path, "rb") as file:
                    assert file.read() == DATA

    def test_delete_removes_bytes_and_absent_ones_are_no_error(self, store: BlobStore):
        kept, gone = Digest.of(b"kept"), Digest.of(b"gone")
        store_bytes(store, kept, b"kept")
        store_bytes(store, gone, b"gone")
        store.delete([gone, Digest.of(b"never stored")])
        assert not store.exists(gone) and store.read(gone) is None
        assert store.read(kept) == b"kept"
        store.delete([])
