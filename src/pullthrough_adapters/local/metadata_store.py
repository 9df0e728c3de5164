"""Cache metadata in SQLite (WAL): safe for several server processes sharing one data directory."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from core.auth import PullKey
from core.digest import Digest
from core.ports import (
    BLOB,
    MANIFEST,
    BreakerState,
    ContentEntry,
    ContentRef,
    ManifestRecord,
    Orphan,
    TagEntry,
    TagRecord,
)
from core.rules import Rule
from core.usage import RETENTION_HOURS, UsageKey, hour_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (
    scope TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL,
    digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
    checked_at REAL NOT NULL, pulled_at REAL NOT NULL,
    PRIMARY KEY (scope, repository, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_pull ON tags (scope, pulled_at);  -- a refresh run's recently pulled tags
CREATE TABLE IF NOT EXISTS manifests (
    scope TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    media_type TEXT NOT NULL, size INTEGER NOT NULL, linked_at REAL NOT NULL, pulled_at REAL,
    PRIMARY KEY (scope, repository, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_by_digest ON manifests (digest);  -- the sweep: who still references it
CREATE TABLE IF NOT EXISTS blobs (
    scope TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    linked_at REAL NOT NULL,
    PRIMARY KEY (scope, repository, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_digest ON blobs (digest);
CREATE TABLE IF NOT EXISTS orphans (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, since REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    hour INTEGER NOT NULL, scope TEXT NOT NULL, repository TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (hour, scope, repository, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rules (prefix TEXT PRIMARY KEY, document TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pull_keys (name TEXT PRIMARY KEY, document TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS breakers (
    key TEXT PRIMARY KEY, failures INTEGER NOT NULL, failures_expire_at REAL NOT NULL, open_until REAL NOT NULL,
    trips INTEGER NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL)
    WITHOUT ROWID;
"""
SCHEMA_VERSION = 3  # 3: hourly usage totals (a new table: nothing to migrate)
CONNECTION_CACHE_KIB = 256  # per connection (SQLite's default: 2,000)

# Version 0 kept manifests and blobs per rule only (any repository of a rule saw them). Manifests knew the
# repository that fetched them, and keep it; blob records are dropped: the bytes stay, and each repository
# links a blob again after one upstream HEAD confirms it.
_MIGRATE_FROM_0 = """
ALTER TABLE manifests RENAME TO manifests_v0;
DROP TABLE blobs;
DROP TABLE IF EXISTS backoffs;
"""
_COPY_FROM_0 = """
INSERT OR IGNORE INTO manifests (scope, repository, digest, media_type, size, linked_at, pulled_at)
    SELECT scope, repository, digest, media_type, size, :now, :now FROM manifests_v0;
DROP TABLE manifests_v0;
"""
# Version 1 had no link or pull times for content. What was cached counts as linked and pulled at the upgrade:
# nothing expires sooner than a full expire_unpulled after it (never all at once on the first sweep).
_MIGRATE_FROM_1 = """
ALTER TABLE manifests ADD COLUMN linked_at REAL NOT NULL DEFAULT 0;
ALTER TABLE manifests ADD COLUMN pulled_at REAL;
UPDATE manifests SET linked_at = :now, pulled_at = :now;
ALTER TABLE blobs ADD COLUMN linked_at REAL NOT NULL DEFAULT 0;
UPDATE blobs SET linked_at = :now;
"""


def _run(db: sqlite3.Connection, script: str, **parameters: object) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement, {key: value for key, value in parameters.items() if f":{key}" in statement})


class SqliteMetadataStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._local = threading.local()
        self._migrate()

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, once, whichever of several starting processes comes first."""
        db = self._db
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            now = self._clock()
            if version == 0 and "blobs" in tables:
                _run(db, _MIGRATE_FROM_0)
                _run(db, _SCHEMA)
                _run(db, _COPY_FROM_0, now=now)
            elif version == 1:
                _run(db, _MIGRATE_FROM_1, now=now)
            _run(db, _SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, fast commits
        # Every thread has a connection, and each would cache up to 2 MB of pages: forty threads of a crowd, 80 MB.
        # The kernel caches the file for all of them, and a commit elsewhere empties a connection's cache anyway.
        db.execute(f"PRAGMA cache_size = -{CONNECTION_CACHE_KIB}")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        # One connection per thread: the server answers requests from a thread pool.
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    # -- tags -----------------------------------------------------------------------------------------------------

    def get_tag(self, scope: str, repository: str, tag: str) -> TagRecord | None:
        row = self._db.execute(
            "SELECT digest, media_type, size, checked_at, pulled_at FROM tags"
            " WHERE scope = ? AND repository = ? AND tag = ?",
            (scope, repository, tag),
        ).fetchone()
        if row is None:
            return None
        digest, media_type, size, checked_at, pulled_at = row
        return TagRecord(ManifestRecord(Digest.parse(digest), media_type, size), checked_at, pulled_at)

    def put_tag(self, scope: str, repository: str, tag: str, record: TagRecord) -> None:
        manifest = record.manifest
        self._db.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (scope, repository, tag, str(manifest.digest), manifest.media_type, manifest.size,
             record.checked_at, record.pulled_at),
        )  # fmt: skip

    def record_pull(self, scope: str, repository: str, tag: str, pulled_at: float) -> None:
        self._db.execute(
            "UPDATE tags SET pulled_at = max(pulled_at, ?) WHERE scope = ? AND repository = ? AND tag = ?",
            (pulled_at, scope, repository, tag),
        )

    def stale_tags(self, scope: str, checked_before: float, pulled_after: float, limit: int) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT repository, tag FROM tags WHERE scope = ? AND checked_at < ? AND pulled_at >= ?"
            " ORDER BY checked_at LIMIT ?",
            (scope, checked_before, pulled_after, limit),
        )
        return [(repository, tag) for repository, tag in rows]

    def list_tags(self, scope: str, repository: str) -> list[str]:
        rows = self._db.execute("SELECT tag FROM tags WHERE scope = ? AND repository = ?", (scope, repository))
        return [tag for (tag,) in rows]

    def list_repositories(self) -> list[tuple[str, str]]:
        rows = self._db.execute("SELECT scope, repository FROM tags UNION SELECT scope, repository FROM manifests")
        return [(scope, repository) for scope, repository in rows]

    # -- content --------------------------------------------------------------------------------------------------

    def get_manifest(self, scope: str, repository: str, digest: Digest) -> ManifestRecord | None:
        row = self._db.execute(
            "SELECT media_type, size, pulled_at FROM manifests WHERE scope = ? AND repository = ? AND digest = ?",
            (scope, repository, str(digest)),
        ).fetchone()
        return None if row is None else ManifestRecord(digest, row[0], row[1], row[2])

    def put_manifest(self, scope: str, repository: str, record: ManifestRecord, *, pulled: bool = False) -> None:
        now = self._clock()
        self._db.execute(
            "INSERT INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, repository, digest) DO UPDATE SET"
            " media_type = excluded.media_type, size = excluded.size, linked_at = excluded.linked_at,"
            " pulled_at = coalesce(max(pulled_at, excluded.pulled_at), pulled_at, excluded.pulled_at)",
            (scope, repository, str(record.digest), record.media_type, record.size, now, now if pulled else None),
        )

    def record_manifest_pull(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        self._db.execute(
            "UPDATE manifests SET pulled_at = max(coalesce(pulled_at, 0), ?)"
            " WHERE scope = ? AND repository = ? AND digest = ?",
            (pulled_at, scope, repository, str(digest)),
        )

    def get_blob(self, scope: str, repository: str, digest: Digest) -> int | None:
        row = self._db.execute(
            "SELECT size FROM blobs WHERE scope = ? AND repository = ? AND digest = ?", (scope, repository, str(digest))
        ).fetchone()
        return None if row is None else int(row[0])

    def put_blob(self, scope: str, repository: str, digest: Digest, size: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?)", (scope, repository, str(digest), size, self._clock())
        )

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def repositories(self, after: str | None, limit: int) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT scope, repository FROM (SELECT scope, repository FROM tags UNION SELECT scope, repository FROM"
            " manifests UNION SELECT scope, repository FROM blobs) WHERE scope || '#' || repository > ?"
            " ORDER BY scope || '#' || repository LIMIT ?",
            (after or "", limit),
        )
        return [(scope, repository) for scope, repository in rows]

    def repository_tags(self, scope: str, repository: str) -> list[TagEntry]:
        rows = self._db.execute(
            "SELECT tag, digest, checked_at, pulled_at FROM tags WHERE scope = ? AND repository = ?",
            (scope, repository),
        )
        return [TagEntry(tag, Digest.parse(digest), checked, pulled) for tag, digest, checked, pulled in rows]

    def repository_content(self, scope: str, repository: str) -> list[ContentEntry]:
        manifests = self._db.execute(
            "SELECT digest, size, linked_at, pulled_at FROM manifests WHERE scope = ? AND repository = ?",
            (scope, repository),
        ).fetchall()
        blobs = self._db.execute(
            "SELECT digest, size, linked_at FROM blobs WHERE scope = ? AND repository = ?", (scope, repository)
        ).fetchall()
        found = [ContentEntry(MANIFEST, Digest.parse(d), size, linked, pulled) for d, size, linked, pulled in manifests]
        return found + [ContentEntry(BLOB, Digest.parse(d), size, linked) for d, size, linked in blobs]

    def forget_tag(self, scope: str, repository: str, tag: str, *, pulled_before: float, checked_before: float) -> bool:
        cursor = self._db.execute(
            "DELETE FROM tags WHERE scope = ? AND repository = ? AND tag = ? AND pulled_at < ? AND checked_at < ?",
            (scope, repository, tag, pulled_before, checked_before),
        )
        return cursor.rowcount == 1

    def forget_content(
        self, scope: str, repository: str, entry: ContentEntry, *, pulled_before: float, linked_before: float
    ) -> bool:
        if entry.kind == MANIFEST:
            cursor = self._db.execute(
                "DELETE FROM manifests WHERE scope = ? AND repository = ? AND digest = ? AND linked_at < ?"
                " AND coalesce(pulled_at, 0) < ?",
                (scope, repository, str(entry.digest), linked_before, pulled_before),
            )
        else:
            cursor = self._db.execute(
                "DELETE FROM blobs WHERE scope = ? AND repository = ? AND digest = ? AND linked_at < ?",
                (scope, repository, str(entry.digest), linked_before),
            )
        return cursor.rowcount == 1

    def references(self, digest: Digest) -> list[ContentRef]:
        rows = self._db.execute(
            "SELECT scope, repository, 'manifest' FROM manifests WHERE digest = ?"
            " UNION ALL SELECT scope, repository, 'blob' FROM blobs WHERE digest = ?",
            (str(digest), str(digest)),
        )
        return [ContentRef(scope, repository, kind) for scope, repository, kind in rows]

    def referenced(self, digests: Sequence[Digest]) -> set[Digest]:
        """One statement for any number of digests: they go in as one JSON array, not as SQL text."""
        rows = self._db.execute(
            "SELECT digest FROM manifests WHERE digest IN (SELECT value FROM json_each(:digests))"
            " UNION SELECT digest FROM blobs WHERE digest IN (SELECT value FROM json_each(:digests))",
            {"digests": json.dumps([str(digest) for digest in digests])},
        )
        return {Digest.parse(digest) for (digest,) in rows}

    def add_orphan(self, orphan: Orphan) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO orphans VALUES (?, ?, ?)", (str(orphan.digest), orphan.size, orphan.since)
        )

    def orphans(self, after: Digest | None, limit: int) -> list[Orphan]:
        rows = self._db.execute(
            "SELECT digest, size, since FROM orphans WHERE digest > ? ORDER BY digest LIMIT ?",
            (str(after) if after else "", limit),
        )
        return [Orphan(Digest.parse(digest), size, since) for digest, size, since in rows]

    def drop_orphans(self, digests: Sequence[Digest]) -> None:
        self._db.execute(
            "DELETE FROM orphans WHERE digest IN (SELECT value FROM json_each(?))",
            (json.dumps([str(digest) for digest in digests]),),
        )

    def get_cursor(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def put_cursor(self, name: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM cursors WHERE name = ?", (name,))
        else:
            self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, value))

    # -- usage -------------------------------------------------------------------------------------------------------

    def add_usage(self, totals: Mapping[UsageKey, float]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (hour, scope, repository, name) DO UPDATE SET value = value + excluded.value",
                [(key.hour, key.rule, key.repository, key.name, value) for key, value in totals.items()],
            )
            db.execute("DELETE FROM usage WHERE hour < ?", (hour_of(self._clock()) - RETENTION_HOURS,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def usage(self, since_hour: int) -> list[tuple[UsageKey, float]]:
        since_hour = max(since_hour, hour_of(self._clock()) - RETENTION_HOURS)
        rows = self._db.execute("SELECT hour, scope, repository, name, value FROM usage WHERE hour >= ?", (since_hour,))
        return [(UsageKey(hour, scope, repository, name), value) for hour, scope, repository, name, value in rows]

    # -- leases ------------------------------------------------------------------------------------------------------

    def acquire_lease(self, key: str, owner: str, seconds: float) -> bool:
        now = self._clock()
        # One statement, so SQLite's write lock makes it atomic across processes.
        cursor = self._db.execute(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
            (key, owner, now + seconds, now),
        )
        return cursor.rowcount == 1

    def release_lease(self, key: str, owner: str) -> None:
        self._db.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

    def live_leases(self, prefix: str) -> int:
        """Leases held now whose key starts with `prefix` (fills in flight, in every process: /metrics)."""
        row = self._db.execute(
            "SELECT count(*) FROM leases WHERE substr(key, 1, ?) = ? AND expires_at > ?",
            (len(prefix), prefix, self._clock()),
        ).fetchone()
        return int(row[0])

    # -- pull keys ---------------------------------------------------------------------------------------------------

    def get_key(self, name: str) -> PullKey | None:
        row = self._db.execute("SELECT document FROM pull_keys WHERE name = ?", (name,)).fetchone()
        return None if row is None else PullKey.from_dict(json.loads(row[0]))

    def put_key(self, key: PullKey) -> None:
        self._db.execute("INSERT OR REPLACE INTO pull_keys VALUES (?, ?)", (key.name, json.dumps(key.to_dict())))

    def list_keys(self) -> list[PullKey]:
        rows = self._db.execute("SELECT document FROM pull_keys ORDER BY name")
        return [PullKey.from_dict(json.loads(document)) for (document,) in rows]

    # -- rules -------------------------------------------------------------------------------------------------------

    def list_rules(self) -> list[Rule]:
        rows = self._db.execute("SELECT document FROM rules ORDER BY prefix")
        return [Rule.from_dict(json.loads(document)) for (document,) in rows]

    def put_rule(self, rule: Rule) -> None:
        self._db.execute("INSERT OR REPLACE INTO rules VALUES (?, ?)", (rule.prefix, json.dumps(rule.to_dict())))

    # -- upstream breakers and counters ------------------------------------------------------------------------------

    def get_breaker(self, key: str) -> BreakerState | None:
        row = self._db.execute(
            "SELECT failures, failures_expire_at, open_until, trips, code, reason FROM breakers WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        failures, failures_expire_at, open_until, trips, code, reason = row
        return BreakerState(failures if failures_expire_at > self._clock() else 0, open_until, trips, code, reason)

    def count_breaker_failure(self, key: str, code: str, reason: str, window_seconds: float) -> int:
        now = self._clock()
        row = self._db.execute(
            "INSERT INTO breakers VALUES (?, 1, ?, 0, 0, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " failures = CASE WHEN failures_expire_at > ? THEN failures + 1 ELSE 1 END,"
            " failures_expire_at = CASE WHEN failures_expire_at > ? THEN failures_expire_at ELSE ? END,"
            " code = excluded.code, reason = excluded.reason RETURNING failures",
            (key, now + window_seconds, code, reason, now, now, now + window_seconds),
        ).fetchone()
        return int(row[0])

    def open_breaker(self, key: str, until: float, code: str, reason: str) -> None:
        self._db.execute(
            "INSERT INTO breakers VALUES (?, 0, 0, ?, 1, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = 0,"
            " open_until = excluded.open_until, trips = trips + 1, code = excluded.code, reason = excluded.reason",
            (key, until, code, reason),
        )

    def close_breaker(self, key: str) -> None:
        self._db.execute("DELETE FROM breakers WHERE key = ?", (key,))

    def increment_counter(self, key: str, expires_at: float) -> int:
        now = self._clock()
        row = self._db.execute(
            "INSERT INTO counters VALUES (?, 1, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = CASE WHEN expires_at > ? THEN value + 1 ELSE 1 END,"
            " expires_at = CASE WHEN expires_at > ? THEN expires_at ELSE excluded.expires_at END RETURNING value",
            (key, expires_at, now, now),
        ).fetchone()
        value = int(row[0])
        if value == 1:  # a new counter: a good moment to drop the expired ones
            self._db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
        return value

    def get_counter(self, key: str) -> int:
        row = self._db.execute("SELECT value, expires_at FROM counters WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row is not None and row[1] > self._clock() else 0

    def delete_rule(self, prefix: str) -> None:
        self._db.execute("DELETE FROM rules WHERE prefix = ?", (prefix,))
