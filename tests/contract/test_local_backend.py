"""The local backend (files + SQLite) against the storage contracts."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from adapters.local.blob_store import FileBlobStore
from adapters.local.metadata_store import SqliteMetadataStore
from core.digest import Digest
from core.filling import store_bytes
from tests.contract.blob_store_contract import BlobStoreContract
from tests.contract.metadata_store_contract import MetadataStoreContract, tag_record


class TestFileBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileBlobStore:
        return FileBlobStore(tmp_path)

    def test_no_temp_files_are_left_behind(self, store: FileBlobStore, tmp_path: Path):
        digest = Digest.of(b"x")
        store_bytes(store, digest, b"x")
        writer = store.writer(digest)
        writer.write(b"y")
        writer.abort()
        assert list((tmp_path / "tmp").iterdir()) == []


class TestSqliteMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock) -> SqliteMetadataStore:
        return SqliteMetadataStore(tmp_path / "metadata.sqlite3", clock=clock)

    def test_one_lease_winner_among_processes(self, tmp_path: Path):
        path = tmp_path / "metadata.sqlite3"
        SqliteMetadataStore(path)
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            winners = pool.starmap(_try_lease, [(path, f"owner-{n}") for n in range(8)])
        assert sum(winners) == 1

    def test_several_processes_share_one_database(self, tmp_path: Path):
        path = tmp_path / "metadata.sqlite3"
        SqliteMetadataStore(path)
        context = multiprocessing.get_context("spawn")
        with context.Pool(4) as pool:
            pool.starmap(_write_tags, [(path, worker) for worker in range(4)])
        assert len(SqliteMetadataStore(path).list_tags("s", "repo")) == 4 * 50


def _write_tags(path: Path, worker: int) -> None:
    store = SqliteMetadataStore(path)
    for index in range(50):
        store.put_tag("s", "repo", f"w{worker}-{index}", tag_record())


def _try_lease(path: Path, owner: str) -> bool:
    return SqliteMetadataStore(path).acquire_lease("fill/x", owner, 60)
