"""Cache metadata in one DynamoDB table (string keys `pk` and `sk`, TTL attribute `expires_at`).

| item | pk | sk | attributes |
|---|---|---|---|
| tag | `TAG#<scope>#<repository>` | `<tag>` | digest, media_type, size, checked_at, pulled_at, tag_scope |
| manifest | `MANIFEST#<scope>#<repository>#<digest>` | `-` | media_type, size, linked_at, pulled_at, content_* |
| blob | `BLOB#<scope>#<repository>#<digest>` | `-` | size, linked_at, content_* |
| references | `REFS#<digest>` | `-` | repos: a string set of `<kind>#<scope>#<repository>` recording the digest |
| orphan | `ORPHANS` | `<digest>` | size, since: bytes no record references (deleted after the grace period) |
| sweep cursor | `CURSOR` | `<name>` | value: where a sweep that ran out of budget goes on |
| usage | `USAGE#<hour>` | `<scope>#<name>#<repository>` | value, expires_at (TTL): hourly totals (see core.usage) |
| repository index | `REPOSITORIES` | `<scope>#<repository>` | |
| lease | `LEASE#<key>` | `-` | owner, expires_at (TTL) |
| upstream breaker | `BREAKER#<upstream URL>` | `-` | failures (and when they expire), open_until, trips, code, reason |
| counter | `COUNTER#<key>` | `-` | value, expires_at (TTL): misses per client, upstream "not found"s |
| pull key | `KEYS` | `KEY#<name>` | key (name, prefixes, scrypt hash of the secret, expiry, revoked) |
| rule | `RULES` | `RULE#<prefix>` | rule (its settings as JSON; a credentials reference, never a secret) |

Manifests and blobs are recorded per repository (a digest one repository pulled is not another's until its upstream
confirms it), and get a partition each, so hot content spreads over partitions; tags of one repository share one,
so listing them is a Query. Expired leases may linger up to two days before TTL deletes them: reads always compare
`expires_at` with the clock.

The `pulled` index (partition `tag_scope` = `SCOPE#<scope>`, sort `pulled_at`, projecting `checked_at`) lets a
refresh run Query the tags of one rule pulled within its window: it reads the working set, never the whole table,
however many abandoned tags, manifests and blobs the table holds. Pulls are recorded at most once a minute per tag,
which bounds the index's writes.

The lifecycle sweep reads a repository at a time: the `content` index (partition `content_repo` =
`<scope>#<repository>`, sort `content_key` = `<kind>#<digest>`) lists a repository's manifests and blobs. Whether any
repository still records a digest is one strongly consistent read of its `REFS#` item, which is written before a
record and updated after one is forgotten: a crash between the two leaves an extra reference (bytes kept longer),
never a missing one (bytes deleted under a record).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from core.auth import PullKey
from core.digest import Digest
from core.errors import Unavailable
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
from core.usage import HOUR, RETENTION_HOURS, UsageKey, hour_of

SINGLE = "-"
# Breaker records outlive their last use by this much before TTL deletes them: long enough to never matter.
BREAKER_RETENTION_SECONDS = 86400
CONTENDED_ATTEMPTS = 5  # conditional updates that lost a race to another writer, before giving up
PULLED_INDEX = "pulled"
CONTENT_INDEX = "content"
BATCH_GET = 100  # BatchGetItem's most keys a call
BATCH_WRITE = 25  # BatchWriteItem's most requests a call

TABLE_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "tag_scope", "AttributeType": "S"},
        {"AttributeName": "pulled_at", "AttributeType": "N"},
        {"AttributeName": "content_repo", "AttributeType": "S"},
        {"AttributeName": "content_key", "AttributeType": "S"},
    ],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": PULLED_INDEX,
            "KeySchema": [
                {"AttributeName": "tag_scope", "KeyType": "HASH"},
                {"AttributeName": "pulled_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["checked_at"]},
        },
        {
            "IndexName": CONTENT_INDEX,
            "KeySchema": [
                {"AttributeName": "content_repo", "KeyType": "HASH"},
                {"AttributeName": "content_key", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["size", "linked_at", "pulled_at"]},
        },
    ],
}
"""The table's keys and indexes, shared by the SAM template (a test compares them) and `ensure_resources`."""


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _content_keys(scope: str, repository: str, kind: str, digest: Digest) -> dict[str, dict[str, str]]:
    """The attributes the `content` index is keyed by."""
    return {":repo": _s(f"{scope}#{repository}"), ":key": _s(f"{kind}#{digest}")}


def _conditional_failure(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class DynamoMetadataStore:
    def __init__(self, client: Any, table: str, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    # -- tags --------------------------------------------------------------------------------------------------------

    def get_tag(self, scope: str, repository: str, tag: str) -> TagRecord | None:
        item = self._get(f"TAG#{scope}#{repository}", tag)
        if item is None:
            return None
        manifest = ManifestRecord(Digest.parse(item["digest"]["S"]), item["media_type"]["S"], int(item["size"]["N"]))
        return TagRecord(manifest, float(item["checked_at"]["N"]), float(item["pulled_at"]["N"]))

    def put_tag(self, scope: str, repository: str, tag: str, record: TagRecord) -> None:
        manifest = record.manifest
        replaced = self._put({
            "pk": _s(f"TAG#{scope}#{repository}"), "sk": _s(tag),
            "digest": _s(str(manifest.digest)), "media_type": _s(manifest.media_type), "size": _n(manifest.size),
            "checked_at": _n(record.checked_at), "pulled_at": _n(record.pulled_at), "tag_scope": _s(f"SCOPE#{scope}"),
        })  # fmt: skip
        if not replaced:  # a revalidated tag is indexed already: no second write to the one index partition
            self._index_repository(scope, repository)

    def record_pull(self, scope: str, repository: str, tag: str, pulled_at: float) -> None:
        with contextlib.suppress(ClientError):  # _call lets only conditional failures through: a newer pull
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={"pk": _s(f"TAG#{scope}#{repository}"), "sk": _s(tag)},
                UpdateExpression="SET pulled_at = :t, tag_scope = :scope",
                ConditionExpression="attribute_exists(pk) AND pulled_at < :t",
                ExpressionAttributeValues={":t": _n(pulled_at), ":scope": _s(f"SCOPE#{scope}")},
            )

    def stale_tags(self, scope: str, checked_before: float, pulled_after: float, limit: int) -> list[tuple[str, str]]:
        """A Query of the `pulled` index: the tags pulled within the window, sorted here by when they were checked."""
        prefix = f"TAG#{scope}#"
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            IndexName=PULLED_INDEX,
            KeyConditionExpression="tag_scope = :scope AND pulled_at >= :pulled",
            FilterExpression="checked_at < :checked",
            ExpressionAttributeValues={
                ":scope": _s(f"SCOPE#{scope}"),
                ":checked": _n(checked_before),
                ":pulled": _n(pulled_after),
            },
            ProjectionExpression="pk, sk, checked_at",
        )
        found: list[tuple[float, str, str]] = []
        try:
            for page in pages:
                for item in page["Items"]:
                    found.append(
                        (float(item["checked_at"]["N"]), item["pk"]["S"].removeprefix(prefix), item["sk"]["S"])
                    )
        except ClientError as exc:
            raise Unavailable("metadata store unavailable") from exc
        return [(repository, tag) for _, repository, tag in sorted(found)[:limit]]

    def list_tags(self, scope: str, repository: str) -> list[str]:
        return [item["sk"]["S"] for item in self._query(f"TAG#{scope}#{repository}")]

    def list_repositories(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self._query("REPOSITORIES"):
            scope, _, repository = item["sk"]["S"].partition("#")
            pairs.append((scope, repository))
        return pairs

    # -- content -----------------------------------------------------------------------------------------------------

    def get_manifest(self, scope: str, repository: str, digest: Digest) -> ManifestRecord | None:
        item = self._get(f"MANIFEST#{scope}#{repository}#{digest}", SINGLE)
        if item is None:
            return None
        pulled = float(item["pulled_at"]["N"]) if "pulled_at" in item else None
        return ManifestRecord(digest, item["media_type"]["S"], int(item["size"]["N"]), pulled)

    def put_manifest(self, scope: str, repository: str, record: ManifestRecord, *, pulled: bool = False) -> None:
        now = self._clock()
        pulled_at = {":pulled": _n(now)} if pulled else {}
        self._refer(record.digest, MANIFEST, scope, repository, add=True)
        self._call(
            self._client.update_item, TableName=self._table,
            Key={"pk": _s(f"MANIFEST#{scope}#{repository}#{record.digest}"), "sk": _s(SINGLE)},
            UpdateExpression="SET media_type = :type, #size = :size, linked_at = :now, content_repo = :repo,"
            " content_key = :key" + (", pulled_at = :pulled" if pulled else ""),
            ExpressionAttributeNames={"#size": "size"},
            ExpressionAttributeValues={":type": _s(record.media_type), ":size": _n(record.size), ":now": _n(now),
                                       **_content_keys(scope, repository, MANIFEST, record.digest), **pulled_at},
        )  # fmt: skip
        self._index_repository(scope, repository)

    def record_manifest_pull(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        with contextlib.suppress(ClientError):  # gone, or pulled later meanwhile
            self._call(
                self._client.update_item, TableName=self._table,
                Key={"pk": _s(f"MANIFEST#{scope}#{repository}#{digest}"), "sk": _s(SINGLE)},
                UpdateExpression="SET pulled_at = :t",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(pulled_at) OR pulled_at < :t)",
                ExpressionAttributeValues={":t": _n(pulled_at)},
            )  # fmt: skip

    def get_blob(self, scope: str, repository: str, digest: Digest) -> int | None:
        item = self._get(f"BLOB#{scope}#{repository}#{digest}", SINGLE)
        return None if item is None else int(item["size"]["N"])

    def put_blob(self, scope: str, repository: str, digest: Digest, size: int) -> None:
        keys = _content_keys(scope, repository, BLOB, digest)
        self._refer(digest, BLOB, scope, repository, add=True)
        self._put({"pk": _s(f"BLOB#{scope}#{repository}#{digest}"), "sk": _s(SINGLE), "size": _n(size),
                   "linked_at": _n(self._clock()), "content_repo": keys[":repo"],
                   "content_key": keys[":key"]})  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def repositories(self, after: str | None, limit: int) -> list[tuple[str, str]]:
        items = self._page("REPOSITORIES", after, limit)
        return [(scope, repository) for scope, _, repository in (item["sk"]["S"].partition("#") for item in items)]

    def repository_tags(self, scope: str, repository: str) -> list[TagEntry]:
        return [
            TagEntry(item["sk"]["S"], Digest.parse(item["digest"]["S"]), float(item["checked_at"]["N"]),
                     float(item["pulled_at"]["N"]))
            for item in self._query(f"TAG#{scope}#{repository}")
        ]  # fmt: skip

    def repository_content(self, scope: str, repository: str) -> list[ContentEntry]:
        entries = []
        for item in self._query_index(CONTENT_INDEX, "content_repo", f"{scope}#{repository}"):
            kind, _, digest = item["content_key"]["S"].partition("#")
            pulled = float(item["pulled_at"]["N"]) if "pulled_at" in item else None
            entries.append(ContentEntry(kind, Digest.parse(digest), int(item["size"]["N"]),
                                        float(item["linked_at"]["N"]), pulled))  # fmt: skip
        return entries

    def forget_tag(self, scope: str, repository: str, tag: str, *, pulled_before: float, checked_before: float) -> bool:
        return self._delete_if(
            {"pk": _s(f"TAG#{scope}#{repository}"), "sk": _s(tag)},
            "pulled_at < :p AND checked_at < :c",
            {":p": _n(pulled_before), ":c": _n(checked_before)},
        )

    def forget_content(
        self, scope: str, repository: str, entry: ContentEntry, *, pulled_before: float, linked_before: float
    ) -> bool:
        key = {"pk": _s(f"{entry.kind.upper()}#{scope}#{repository}#{entry.digest}"), "sk": _s(SINGLE)}
        if entry.kind == MANIFEST:
            condition = "linked_at < :l AND (attribute_not_exists(pulled_at) OR pulled_at < :p)"
            forgotten = self._delete_if(key, condition, {":l": _n(linked_before), ":p": _n(pulled_before)})
        else:
            forgotten = self._delete_if(key, "linked_at < :l", {":l": _n(linked_before)})
        if forgotten:
            self._refer(entry.digest, entry.kind, scope, repository, add=False)
        return forgotten

    def references(self, digest: Digest) -> list[ContentRef]:
        answer = self._call(self._client.get_item, TableName=self._table, ConsistentRead=True,
                            Key={"pk": _s(f"REFS#{digest}"), "sk": _s(SINGLE)})  # fmt: skip
        refs = answer.get("Item", {}).get("repos", {}).get("SS", [])
        return [ContentRef(scope, repository, kind) for kind, scope, repository in (ref.split("#", 2) for ref in refs)]

    def referenced(self, digests: Sequence[Digest]) -> set[Digest]:
        """BatchGetItem, 100 keys a call (its maximum), consistent reads."""
        found: set[Digest] = set()
        for start in range(0, len(digests), BATCH_GET):
            keys = [{"pk": _s(f"REFS#{digest}"), "sk": _s(SINGLE)} for digest in digests[start : start + BATCH_GET]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                answer = self._call(self._client.batch_get_item, RequestItems=request)
                found |= {Digest.parse(item["pk"]["S"].removeprefix("REFS#"))
                          for item in answer["Responses"].get(self._table, []) if item.get("repos")}  # fmt: skip
                request = answer.get("UnprocessedKeys") or {}
        return found

    def add_orphan(self, orphan: Orphan) -> None:
        with contextlib.suppress(ClientError):  # known already: it keeps its first `since`
            self._call(
                self._client.put_item, TableName=self._table,
                Item={"pk": _s("ORPHANS"), "sk": _s(str(orphan.digest)), "size": _n(orphan.size),
                      "since": _n(orphan.since)},
                ConditionExpression="attribute_not_exists(pk)",
            )  # fmt: skip

    def orphans(self, after: Digest | None, limit: int) -> list[Orphan]:
        items = self._page("ORPHANS", str(after) if after is not None else None, limit)
        return [Orphan(Digest.parse(item["sk"]["S"]), int(item["size"]["N"]), float(item["since"]["N"]))
                for item in items]  # fmt: skip

    def drop_orphans(self, digests: Sequence[Digest]) -> None:
        """BatchWriteItem, 25 deletes a call (its maximum)."""
        for start in range(0, len(digests), BATCH_WRITE):
            deletes = [{"DeleteRequest": {"Key": {"pk": _s("ORPHANS"), "sk": _s(str(digest))}}}
                       for digest in digests[start : start + BATCH_WRITE]]  # fmt: skip
            request: dict[str, Any] = {self._table: deletes}
            while request:
                request = self._call(self._client.batch_write_item, RequestItems=request).get("UnprocessedItems") or {}

    def get_cursor(self, name: str) -> str | None:
        item = self._get("CURSOR", name)
        return None if item is None else str(item["value"]["S"])

    def put_cursor(self, name: str, value: str | None) -> None:
        if value is None:
            self._call(self._client.delete_item, TableName=self._table, Key={"pk": _s("CURSOR"), "sk": _s(name)})
        else:
            self._put({"pk": _s("CURSOR"), "sk": _s(name), "value": _s(value)})

    # -- usage -------------------------------------------------------------------------------------------------------

    def add_usage(self, totals: Mapping[UsageKey, float]) -> None:
        """One atomic ADD per total; the partition of an hour is small (rules by names, and the repositories pulled)."""
        for key, value in totals.items():
            self._call(
                self._client.update_item, TableName=self._table,
                Key={"pk": _s(f"USAGE#{key.hour}"), "sk": _s(f"{key.rule}#{key.name}#{key.repository}")},
                UpdateExpression="ADD #value :v SET expires_at = :expires",
                ExpressionAttributeNames={"#value": "value"},
                ExpressionAttributeValues={":v": _n(value), ":expires": _n((key.hour + RETENTION_HOURS) * HOUR)},
            )  # fmt: skip

    def usage(self, since_hour: int) -> list[tuple[UsageKey, float]]:
        """A Query per hour: 168 for a week. Nothing past the retention, which the TTL removes only days later."""
        found = []
        now = hour_of(self._clock())
        for hour in range(max(since_hour, now - RETENTION_HOURS), now + 1):
            for item in self._query(f"USAGE#{hour}"):
                rule, name, repository = item["sk"]["S"].split("#", 2)
                found.append((UsageKey(hour, rule, repository, name), float(item["value"]["N"])))
        return found

    # -- leases ------------------------------------------------------------------------------------------------------

    def acquire_lease(self, key: str, owner: str, seconds: float) -> bool:
        now = self._clock()
        try:
            self._call(
                self._client.put_item,
                TableName=self._table,
                Item={"pk": _s(f"LEASE#{key}"), "sk": _s(SINGLE), "owner": _s(owner), "expires_at": _n(now + seconds)},
                ConditionExpression="attribute_not_exists(pk) OR #owner = :owner OR expires_at <= :now",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _s(owner), ":now": _n(now)},
            )
            return True
        except ClientError:  # another owner holds an unexpired lease
            return False

    def release_lease(self, key: str, owner: str) -> None:
        with contextlib.suppress(ClientError):  # no longer ours: nothing to release
            self._call(
                self._client.delete_item,
                TableName=self._table,
                Key={"pk": _s(f"LEASE#{key}"), "sk": _s(SINGLE)},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _s(owner)},
            )

    # -- pull keys ---------------------------------------------------------------------------------------------------

    def get_key(self, name: str) -> PullKey | None:
        item = self._get("KEYS", f"KEY#{name}")
        return None if item is None else PullKey.from_dict(json.loads(item["key"]["S"]))

    def put_key(self, key: PullKey) -> None:
        self._put({"pk": _s("KEYS"), "sk": _s(f"KEY#{key.name}"), "key": _s(json.dumps(key.to_dict()))})

    def list_keys(self) -> list[PullKey]:
        return [PullKey.from_dict(json.loads(item["key"]["S"])) for item in self._query("KEYS")]

    # -- rules -------------------------------------------------------------------------------------------------------

    def list_rules(self) -> list[Rule]:
        return [Rule.from_dict(json.loads(item["rule"]["S"])) for item in self._query("RULES")]

    def put_rule(self, rule: Rule) -> None:
        self._put({"pk": _s("RULES"), "sk": _s(f"RULE#{rule.prefix}"), "rule": _s(json.dumps(rule.to_dict()))})

    # -- upstream breakers and counters ------------------------------------------------------------------------------

    def get_breaker(self, key: str) -> BreakerState | None:
        item = self._get(f"BREAKER#{key}", SINGLE)
        if item is None:
            return None
        counting = float(item["failures_expire_at"]["N"]) > self._clock()
        return BreakerState(
            int(item["failures"]["N"]) if counting else 0, float(item["open_until"]["N"]), int(item["trips"]["N"]),
            item["code"]["S"], item["reason"]["S"],
        )  # fmt: skip

    def count_breaker_failure(self, key: str, code: str, reason: str, window_seconds: float) -> int:
        now = self._clock()
        pk = {"pk": _s(f"BREAKER#{key}"), "sk": _s(SINGLE)}
        last = {":code": _s(code), ":reason": _s(reason), ":gone": _n(now + window_seconds + BREAKER_RETENTION_SECONDS)}
        for _ in range(CONTENDED_ATTEMPTS):  # count on within the window, or start a new count: conditional updates
            try:
                answer = self._call(
                    self._client.update_item, TableName=self._table, Key=pk, ReturnValues="UPDATED_NEW",
                    UpdateExpression="SET failures = failures + :one, code = :code, reason = :reason,"
                    " expires_at = :gone",
                    ConditionExpression="failures_expire_at > :now",
                    ExpressionAttributeValues={":one": _n(1), ":now": _n(now), **last},
                )  # fmt: skip
                return int(answer["Attributes"]["failures"]["N"])
            except ClientError:
                pass
            try:
                self._call(
                    self._client.update_item, TableName=self._table, Key=pk,
                    UpdateExpression="SET failures = :one, failures_expire_at = :until, code = :code, reason = :reason,"
                    " open_until = if_not_exists(open_until, :zero), trips = if_not_exists(trips, :zero),"
                    " expires_at = :gone",
                    ConditionExpression="attribute_not_exists(pk) OR failures_expire_at <= :now",
                    ExpressionAttributeValues={":one": _n(1), ":zero": _n(0), ":now": _n(now),
                                               ":until": _n(now + window_seconds), **last},
                )  # fmt: skip
                return 1
            except ClientError:
                continue  # another process started the count meanwhile: count on
        raise Unavailable("metadata store contended")

    def open_breaker(self, key: str, until: float, code: str, reason: str) -> None:
        self._call(
            self._client.update_item, TableName=self._table, Key={"pk": _s(f"BREAKER#{key}"), "sk": _s(SINGLE)},
            UpdateExpression="SET failures = :zero, failures_expire_at = if_not_exists(failures_expire_at, :zero),"
            " open_until = :until, code = :code, reason = :reason, expires_at = :gone ADD trips :one",
            ExpressionAttributeValues={":zero": _n(0), ":one": _n(1), ":until": _n(until), ":code": _s(code),
                                       ":reason": _s(reason), ":gone": _n(until + BREAKER_RETENTION_SECONDS)},
        )  # fmt: skip

    def close_breaker(self, key: str) -> None:
        self._call(self._client.delete_item, TableName=self._table, Key={"pk": _s(f"BREAKER#{key}"), "sk": _s(SINGLE)})

    def increment_counter(self, key: str, expires_at: float) -> int:
        now = self._clock()
        pk = {"pk": _s(f"COUNTER#{key}"), "sk": _s(SINGLE)}
        for _ in range(CONTENDED_ATTEMPTS):
            try:
                answer = self._call(
                    self._client.update_item, TableName=self._table, Key=pk, ReturnValues="UPDATED_NEW",
                    UpdateExpression="ADD #value :one", ConditionExpression="expires_at > :now",
                    ExpressionAttributeNames={"#value": "value"},
                    ExpressionAttributeValues={":one": _n(1), ":now": _n(now)},
                )  # fmt: skip
                return int(answer["Attributes"]["value"]["N"])
            except ClientError:
                pass
            try:
                self._call(
                    self._client.put_item, TableName=self._table,
                    Item={**pk, "value": _n(1), "expires_at": _n(expires_at)},
                    ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                    ExpressionAttributeValues={":now": _n(now)},
                )  # fmt: skip
                return 1
            except ClientError:
                continue
        raise Unavailable("metadata store contended")

    def get_counter(self, key: str) -> int:
        item = self._get(f"COUNTER#{key}", SINGLE)
        if item is None or float(item["expires_at"]["N"]) <= self._clock():  # TTL deletes late: always compare
            return 0
        return int(item["value"]["N"])

    def delete_rule(self, prefix: str) -> None:
        self._call(self._client.delete_item, TableName=self._table, Key={"pk": _s("RULES"), "sk": _s(f"RULE#{prefix}")})

    # -- DynamoDB ----------------------------------------------------------------------------------------------------

    def _index_repository(self, scope: str, repository: str) -> None:
        self._put({"pk": _s("REPOSITORIES"), "sk": _s(f"{scope}#{repository}")})

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        answer = self._call(self._client.get_item, TableName=self._table, Key={"pk": _s(pk), "sk": _s(sk)})
        item: dict[str, Any] | None = answer.get("Item")
        return item

    def _put(self, item: dict[str, Any]) -> bool:
        """Whether it replaced an item."""
        answer = self._call(self._client.put_item, TableName=self._table, Item=item, ReturnValues="ALL_OLD")
        return "Attributes" in answer

    def _refer(self, digest: Digest, kind: str, scope: str, repository: str, *, add: bool) -> None:
        """Add (before a record is written) or remove (after it is forgotten) a repository from the digest's
        references. An emptied set removes the attribute; the item stays, two words long."""
        self._call(
            self._client.update_item, TableName=self._table, Key={"pk": _s(f"REFS#{digest}"), "sk": _s(SINGLE)},
            UpdateExpression=f"{'ADD' if add else 'DELETE'} repos :ref",
            ExpressionAttributeValues={":ref": {"SS": [f"{kind}#{scope}#{repository}"]}},
        )  # fmt: skip

    def _page(self, pk: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items of one partition, those sorted after `after`: one bounded Query."""
        arguments: dict[str, Any] = {"TableName": self._table, "KeyConditionExpression": "pk = :pk",
                                     "ExpressionAttributeValues": {":pk": _s(pk)}, "Limit": limit}  # fmt: skip
        if after is not None:
            arguments["ExclusiveStartKey"] = {"pk": _s(pk), "sk": _s(after)}
        items: list[dict[str, Any]] = self._call(self._client.query, **arguments)["Items"]
        return items

    def _delete_if(self, key: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        try:
            self._call(self._client.delete_item, TableName=self._table, Key=key, ConditionExpression=condition,
                       ExpressionAttributeValues=values)  # fmt: skip
            return True
        except ClientError:  # the condition failed: pulled, linked or gone since
            return False

    def _query_index(self, index: str, attribute: str, value: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(TableName=self._table, IndexName=index, KeyConditionExpression=f"{attribute} = :v",
                                   ExpressionAttributeValues={":v": _s(value)})  # fmt: skip
        try:
            for page in pages:
                yield from page["Items"]
        except ClientError as exc:
            raise Unavailable("metadata store unavailable") from exc

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(pk)}
        )
        try:
            for page in pages:
                yield from page["Items"]
        except ClientError as exc:
            raise Unavailable("metadata store unavailable") from exc

    @staticmethod
    def _call(operation: Callable[..., dict[str, Any]], **arguments: Any) -> dict[str, Any]:
        """Conditional failures are answers the caller reads; anything else means the store is unavailable."""
        try:
            return operation(**arguments)
        except ClientError as exc:
            if _conditional_failure(exc):
                raise
            raise Unavailable("metadata store unavailable") from exc
