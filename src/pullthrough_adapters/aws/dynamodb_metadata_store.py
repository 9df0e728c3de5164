"""Cache metadata in one DynamoDB table (string keys `pk` and `sk`, TTL attribute `expires_at`).

| item | pk | sk | attributes |
|---|---|---|---|
| tag | `TAG#<scope>#<repository>` | `<tag>` | digest, media_type, size, checked_at, pulled_at, tag_scope |
| manifest | `MANIFEST#<scope>#<repository>#<digest>` | `-` | media_type, size |
| blob | `BLOB#<scope>#<repository>#<digest>` | `-` | size |
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
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from core.auth import PullKey
from core.digest import Digest
from core.errors import Unavailable
from core.ports import BreakerState, ManifestRecord, TagRecord
from core.rules import Rule

SINGLE = "-"
# Breaker records outlive their last use by this much before TTL deletes them: long enough to never matter.
BREAKER_RETENTION_SECONDS = 86400
CONTENDED_ATTEMPTS = 5  # conditional updates that lost a race to another writer, before giving up
PULLED_INDEX = "pulled"

TABLE_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "tag_scope", "AttributeType": "S"},
        {"AttributeName": "pulled_at", "AttributeType": "N"},
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
        }
    ],
}
"""The table's keys and indexes, shared by the SAM template (a test compares them) and `ensure_resources`."""


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


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
        return None if item is None else ManifestRecord(digest, item["media_type"]["S"], int(item["size"]["N"]))

    def put_manifest(self, scope: str, repository: str, record: ManifestRecord) -> None:
        self._put({
            "pk": _s(f"MANIFEST#{scope}#{repository}#{record.digest}"), "sk": _s(SINGLE),
            "media_type": _s(record.media_type), "size": _n(record.size),
        })  # fmt: skip
        self._index_repository(scope, repository)

    def get_blob(self, scope: str, repository: str, digest: Digest) -> int | None:
        item = self._get(f"BLOB#{scope}#{repository}#{digest}", SINGLE)
        return None if item is None else int(item["size"]["N"])

    def put_blob(self, scope: str, repository: str, digest: Digest, size: int) -> None:
        self._put({"pk": _s(f"BLOB#{scope}#{repository}#{digest}"), "sk": _s(SINGLE), "size": _n(size)})

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
