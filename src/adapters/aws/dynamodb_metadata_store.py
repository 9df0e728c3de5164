"""Cache metadata in one DynamoDB table (string keys `pk` and `sk`, TTL attribute `expires_at`).

| item | pk | sk | attributes |
|---|---|---|---|
| tag | `TAG#<scope>#<repository>` | `<tag>` | digest, media_type, size, checked_at, pulled_at, tag_scope |
| manifest | `MANIFEST#<scope>#<digest>` | `-` | repository, media_type, size |
| blob | `BLOB#<scope>#<digest>` | `-` | size |
| repository index | `REPOSITORIES` | `<scope>#<repository>` | |
| lease | `LEASE#<key>` | `-` | owner, expires_at (TTL) |
| upstream back-off | `BACKOFF#<upstream URL>` | `-` | code, reason, expires_at (TTL) |
| pull key | `KEYS` | `KEY#<name>` | key (name, prefixes, scrypt hash of the secret, expiry, revoked) |
| rule | `RULES` | `RULE#<prefix>` | rule (its settings as JSON; a credentials reference, never a secret) |

Manifests and blobs get a partition each, so hot content spreads over partitions; tags of one repository share one,
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
from core.ports import Backoff, ManifestRecord, TagRecord
from core.rules import Rule

SINGLE = "-"
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

    def get_manifest(self, scope: str, digest: Digest) -> ManifestRecord | None:
        item = self._get(f"MANIFEST#{scope}#{digest}", SINGLE)
        return None if item is None else ManifestRecord(digest, item["media_type"]["S"], int(item["size"]["N"]))

    def put_manifest(self, scope: str, repository: str, record: ManifestRecord) -> None:
        self._put({
            "pk": _s(f"MANIFEST#{scope}#{record.digest}"), "sk": _s(SINGLE), "repository": _s(repository),
            "media_type": _s(record.media_type), "size": _n(record.size),
        })  # fmt: skip
        self._index_repository(scope, repository)

    def get_blob(self, scope: str, digest: Digest) -> int | None:
        item = self._get(f"BLOB#{scope}#{digest}", SINGLE)
        return None if item is None else int(item["size"]["N"])

    def put_blob(self, scope: str, digest: Digest, size: int) -> None:
        self._put({"pk": _s(f"BLOB#{scope}#{digest}"), "sk": _s(SINGLE), "size": _n(size)})

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

    # -- upstream back-off -------------------------------------------------------------------------------------------

    def get_backoff(self, key: str) -> Backoff | None:
        item = self._get(f"BACKOFF#{key}", SINGLE)
        now = self._clock()
        if item is None or float(item["expires_at"]["N"]) <= now:  # TTL deletes late: always compare
            return None
        return Backoff(float(item["expires_at"]["N"]) - now, item["code"]["S"], item["reason"]["S"])

    def put_backoff(self, key: str, seconds: float, code: str, reason: str) -> None:
        self._put({"pk": _s(f"BACKOFF#{key}"), "sk": _s(SINGLE), "expires_at": _n(self._clock() + seconds),
                   "code": _s(code), "reason": _s(reason)})  # fmt: skip

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
