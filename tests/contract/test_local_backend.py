"""The local backend (files + SQLite) against the storage contracts."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from core.digest import Digest
from core.filling import store_bytes
from core.mediatypes import OCI_MANIFEST
from core.ports import ManifestRecord
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SCHEMA_VERSION, SqliteMetadataStore
from tests.contract.blob_filler_contract import BlobFillerContract, Parts
from tests.contract.blob_store_contract import BlobStoreContract
from tests.contract.metadata_store_contract import D1, D2, METADATA_CONTRACTS, tag_record


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


class TestTeeFiller(BlobFillerContract):
    @pytest.fixture
    def parts(self, tmp_path: Path) -> Parts:
        store, state = FileBlobStore(tmp_path), SqliteMetadataStore(tmp_path / "metadata.sqlite3")
        return TeeFiller(store, state), store, state


class TestSqliteMetadataStore(*METADATA_CONTRACTS):
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

    def test_a_version_0_database_is_migrated_once_keeping_tags_and_manifests(self, tmp_path: Path):
        path = tmp_path / "metadata.sqlite3"
        _write_version_0(path)
        with multiprocessing.get_context("spawn").Pool(4) as pool:  # several processes start on it at once
            pool.map(_open_store, [path] * 4)
        store = SqliteMetadataStore(path)
        assert store.get_tag("s", "library/app", "v1") == tag_record(D1, 10.0, 20.0)
        assert store.get_manifest("s", "library/app", D1) == ManifestRecord(D1, OCI_MANIFEST, 42)
        assert store.get_manifest("s", "library/other", D1) is None
        # blob records had no repository: gone, to be confirmed again per repository (the bytes stay)
        assert store.get_blob("s", "library/app", D2) is None
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)

    def test_a_version_1_database_gets_link_and_pull_times_of_the_upgrade(self, tmp_path: Path, clock):
        """Content from before link and pull times were kept counts as linked and pulled at the upgrade: nothing
        expires sooner than a full expire_unpulled after it, and tags keep their own pull times."""
        path = tmp_path / "metadata.sqlite3"
        _write_version_0(path)
        db = sqlite3.connect(path)  # version 1: content per repository, no times
        db.executescript("""
            DROP TABLE manifests; DROP TABLE blobs; DROP TABLE backoffs;
            CREATE TABLE manifests (scope TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
                media_type TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (scope, repository, digest)) WITHOUT ROWID;
            CREATE TABLE blobs (scope TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
                size INTEGER NOT NULL, PRIMARY KEY (scope, repository, digest)) WITHOUT ROWID;
            PRAGMA user_version = 1;
        """)
        db.execute("INSERT INTO manifests VALUES ('s', 'library/app', ?, ?, 42)", (str(D1), OCI_MANIFEST))
        db.execute("INSERT INTO blobs VALUES ('s', 'library/app', ?, 7)", (str(D2),))
        db.commit()
        db.close()
        store = SqliteMetadataStore(path, clock=clock)
        assert store.get_tag("s", "library/app", "v1") == tag_record(D1, 10.0, 20.0)  # its pull time kept
        content = {entry.digest: entry for entry in store.repository_content("s", "library/app")}
        assert content[D1].linked_at == content[D1].pulled_at == clock()
        assert content[D2].linked_at == clock() and store.get_blob("s", "library/app", D2) == 7


def _open_store(path: Path) -> None:
    SqliteMetadataStore(path)


def _write_version_0(path: Path) -> None:
    """The schema before content was recorded per repository, as a data directory from then has it."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE tags (scope TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
            media_type TEXT NOT NULL, size INTEGER NOT NULL, checked_at REAL NOT NULL, pulled_at REAL NOT NULL,
            PRIMARY KEY (scope, repository, tag)) WITHOUT ROWID;
        CREATE TABLE manifests (scope TEXT NOT NULL, digest TEXT NOT NULL, repository TEXT NOT NULL,
            media_type TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (scope, digest)) WITHOUT ROWID;
        CREATE TABLE blobs (scope TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
            PRIMARY KEY (scope, digest)) WITHOUT ROWID;
        CREATE TABLE backoffs (key TEXT PRIMARY KEY, until REAL NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL)
            WITHOUT ROWID;
    """)
    db.execute("INSERT INTO tags VALUES ('s', 'library/app', 'v1', ?, ?, 123, 10.0, 20.0)", (str(D1), OCI_MANIFEST))
    db.execute("INSERT INTO manifests VALUES ('s', ?, 'library/app', ?, 42)", (str(D1), OCI_MANIFEST))
    db.execute("INSERT INTO blobs VALUES ('s', ?, 7)", (str(D2),))
    db.commit()
    db.close()


def _write_tags(path: Path, worker: int) -> None:
    store = SqliteMetadataStore(path)
    for index in range(50):
        store.put_tag("s", "repo", f"w{worker}-{index}", tag_record())


def _try_lease(path: Path, owner: str) -> bool:
    return SqliteMetadataStore(path).acquire_lease("fill/x", owner, 60)
