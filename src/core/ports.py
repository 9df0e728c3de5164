"""The ports the pull-through service needs; adapters implement them (local files + SQLite, S3 + DynamoDB, HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from core.digest import Digest
from core.mediatypes import INDEX_TYPES
from core.rules import Rule

# -- what a stored or streamed blob looks like to the HTTP layer --------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalBlob:
    """A verified blob on the local disk: the HTTP layer serves the file (with Range) itself."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class StreamedBlob:
    """A blob still arriving from the upstream; `chunks(offset, length)` yields its bytes as they are verified.
    `stored()` returns once it is stored and recorded (the last byte reaches readers just before that)."""

    size: int
    chunks: Callable[[int, int], Iterator[bytes]]
    stored: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class Redirect:
    """The bytes live elsewhere (an S3 presigned URL): the HTTP layer answers 307."""

    url: str


@dataclass(frozen=True, slots=True)
class SizeOnly:
    """Answer to a HEAD that needs no body."""

    size: int


BlobBody = LocalBlob | StreamedBlob | Redirect | SizeOnly


# -- records kept in the metadata store --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: Digest
    media_type: str
    size: int
    # the last pull by digest (None: never pulled by digest), as read from the store; not part of its identity
    pulled_at: float | None = field(default=None, compare=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True, slots=True)
class BreakerState:
    """What the store remembers of an upstream's recent failures (see core.breaker)."""

    failures: int  # whole-upstream failures in a row, within the counting window
    open_until: float  # while in the future, nobody asks the upstream; once past, one probe may
    trips: int  # how often it opened since it last closed: each failed probe doubles the back-off
    code: str  # the OCI error code of the last failure
    reason: str


@dataclass(frozen=True, slots=True)
class TagRecord:
    manifest: ManifestRecord
    checked_at: float  # last time the upstream confirmed (or gave) this digest
    pulled_at: float  # last time a client pulled the tag; the refresh job watches recently pulled tags


# -- storage ports -----------------------------------------------------------------------------------------------


class BlobWriter(Protocol):
    """Streams content in; `commit` makes it visible only if it matches the digest, else raises DigestMismatch."""

    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed bytes, for layers, configs and manifests alike."""

    def exists(self, digest: Digest) -> bool: ...

    def read(self, digest: Digest) -> bytes | None:
        """Small content (manifests) in one piece; None if absent."""

    def writer(self, digest: Digest) -> BlobWriter: ...

    def locate(self, digest: Digest, *, head: bool) -> BlobBody | None:
        """How a client gets the bytes: a local file, or a redirect signed for GET or for HEAD."""

    def delete(self, digests: Sequence[Digest]) -> None:
        """Remove the bytes (in batches where the backend has them); absent ones are no error. Only the lifecycle
        sweep calls this, and only for digests no record has referenced for its grace period."""


class TagStore(Protocol):
    """Tags per scope (rule) and repository: what they point at, when the upstream confirmed it, when pulled."""

    def get_tag(self, scope: str, repository: str, tag: str) -> TagRecord | None: ...

    def put_tag(self, scope: str, repository: str, tag: str, record: TagRecord) -> None: ...

    def record_pull(self, scope: str, repository: str, tag: str, pulled_at: float) -> None: ...

    def stale_tags(self, scope: str, checked_before: float, pulled_after: float, limit: int) -> list[tuple[str, str]]:
        """(repository, tag) of tags last confirmed before `checked_before` and pulled since `pulled_after`, the
        least recently confirmed first: what a refresh run revalidates."""

    def list_tags(self, scope: str, repository: str) -> list[str]: ...

    def list_repositories(self) -> list[tuple[str, str]]:
        """(scope, repository) pairs with cached tags or manifests."""


class ContentIndex(Protocol):
    """Which manifests and blobs are cached for a scope and repository. A digest recorded for one repository says
    nothing about another: a client of that one gets it only after its upstream confirms it."""

    def get_manifest(self, scope: str, repository: str, digest: Digest) -> ManifestRecord | None: ...

    def put_manifest(self, scope: str, repository: str, record: ManifestRecord, *, pulled: bool = False) -> None:
        """Record it (now: its link time), and, `pulled`, as pulled by digest now."""

    def record_manifest_pull(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        """A pull by digest (the last-pull time only moves forward)."""

    def get_blob(self, scope: str, repository: str, digest: Digest) -> int | None:
        """The size of a blob cached for this repository, or None."""

    def put_blob(self, scope: str, repository: str, digest: Digest, size: int) -> None: ...


class Leases(Protocol):
    """Expiring leases: concurrent fills across processes or Lambda instances agree on one filler through them."""

    def acquire_lease(self, key: str, owner: str, seconds: float) -> bool:
        """Take (or renew, for the same owner) an expiring lease; False while another owner holds it."""

    def release_lease(self, key: str, owner: str) -> None:
        """Drop the lease if `owner` still holds it."""


class Breakers(Protocol):
    """The circuit breaker of each upstream (see core.breaker)."""

    def get_breaker(self, key: str) -> BreakerState | None:
        """The upstream's breaker; None while it has no failures to remember."""

    def count_breaker_failure(self, key: str, code: str, reason: str, window_seconds: float) -> int:
        """Count one more failure, atomically, and return how many there were in a row; a count older than
        `window_seconds` starts again from one."""

    def open_breaker(self, key: str, until: float, code: str, reason: str) -> None:
        """Open it until `until` (a wall-clock time): one more trip, the failure count back to zero."""

    def close_breaker(self, key: str) -> None: ...


class Counters(Protocol):
    """Expiring counters: misses per client and window, remembered upstream "not found"s."""

    def increment_counter(self, key: str, expires_at: float) -> int:
        """Add one to an expiring counter, atomically, and return its value; an expired one starts again at one
        (and expires at `expires_at`)."""

    def get_counter(self, key: str) -> int:
        """The counter's value; 0 when it does not exist or expired."""


MANIFEST, BLOB = "manifest", "blob"


@dataclass(frozen=True, slots=True)
class TagEntry:
    tag: str
    digest: Digest
    checked_at: float
    pulled_at: float


@dataclass(frozen=True, slots=True)
class ContentEntry:
    """A manifest or blob recorded for one repository."""

    kind: str  # MANIFEST or BLOB
    digest: Digest
    size: int
    linked_at: float  # when this repository's record was written
    pulled_at: float | None = None  # manifests: the last pull by digest, if any


@dataclass(frozen=True, slots=True)
class ContentRef:
    scope: str
    repository: str
    kind: str


@dataclass(frozen=True, slots=True)
class Orphan:
    """Bytes no record references any more, since `since`: deleted once that is longer ago than the grace period."""

    digest: Digest
    size: int
    since: float


class Lifecycle(Protocol):
    """What the lifecycle sweep reads and forgets, in bounded pieces: a repository at a time, orphans by page."""

    def repositories(self, after: str | None, limit: int) -> list[tuple[str, str]]:
        """(scope, repository) with any record, in a stable order, those after the cursor `after` (a value of
        `cursor_of`)."""

    def repository_tags(self, scope: str, repository: str) -> list[TagEntry]: ...

    def repository_content(self, scope: str, repository: str) -> list[ContentEntry]: ...

    def forget_tag(self, scope: str, repository: str, tag: str, *, pulled_before: float, checked_before: float) -> bool:
        """Delete the tag record only if it was pulled and confirmed before those times (a pull or a refresh since
        the sweep looked keeps it); whether it did."""

    def forget_content(
        self, scope: str, repository: str, entry: ContentEntry, *, pulled_before: float, linked_before: float
    ) -> bool:
        """Delete the record only if not linked (nor, a manifest, pulled by digest) since; whether it did."""

    def references(self, digest: Digest) -> list[ContentRef]:
        """Every record of the digest, in any scope and repository."""

    def referenced(self, digests: Sequence[Digest]) -> set[Digest]:
        """Those of `digests` some record still holds: `references` for many, in few calls."""

    def add_orphan(self, orphan: Orphan) -> None:
        """Remember it (an orphan already known keeps its first `since`)."""

    def orphans(self, after: Digest | None, limit: int) -> list[Orphan]: ...

    def drop_orphans(self, digests: Sequence[Digest]) -> None: ...

    def get_cursor(self, name: str) -> str | None:
        """Where a sweep that stopped at its budget goes on (None: from the start)."""

    def put_cursor(self, name: str, value: str | None) -> None: ...


def cursor_of(scope: str, repository: str) -> str:
    return f"{scope}#{repository}"


class UpstreamGuardState(Breakers, Counters, Leases, Protocol):
    """What guarding an upstream keeps: its breaker, its probe lease, the "not found"s it remembers."""


class FillState(ContentIndex, Leases, Protocol):
    """What a filler keeps: the lease of each fill, the record of what it stored."""


class CacheMetadata(TagStore, ContentIndex, Leases, Breakers, Counters, Protocol):
    """Everything the pull-through service keeps; both backends implement every role."""


# -- the upstream registry ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamManifest:
    data: bytes
    content_type: str | None
    digest: Digest | None  # what the upstream says it is (Docker-Content-Digest), when it says


@dataclass(frozen=True, slots=True)
class UpstreamHead:
    digest: Digest | None
    media_type: str | None
    size: int | None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What the upstream says is left of its pull allowance (Docker Hub: `ratelimit-remaining: 17;w=21600`, sent on
    HEADs too, which do not count as pulls)."""

    remaining: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class UpstreamBlob:
    size: int | None
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class TagPage:
    tags: list[str]
    has_more: bool


class Upstream(Protocol):
    """One upstream registry, as seen through one rule's credentials.

    Errors are raised as the OCI errors a client should see: ManifestUnknown, BlobUnknown, NameUnknown, Denied,
    TooManyRequests (throttled) and Unavailable (network failure, timeout, 5xx).
    """

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead: ...

    def get_manifest(self, repository: str, reference: str) -> UpstreamManifest: ...

    def head_blob(self, repository: str, digest: Digest) -> int | None: ...

    def open_blob(self, repository: str, digest: Digest) -> AbstractContextManager[UpstreamBlob]: ...

    def list_tags(self, repository: str, n: int | None, last: str | None) -> TagPage: ...

    def referrers(self, repository: str, subject: Digest) -> UpstreamManifest | None:
        """The upstream's referrers API answer for `subject`, every page as one unfiltered OCI image index; None
        when the upstream has no referrers API (its clients then keep the referrers tag schema)."""


class Upstreams(Protocol):
    def for_rule(self, rule: Rule) -> Upstream: ...


# -- events ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """One tag synced with its upstream, shaped like ECR's "ECR Pull Through Cache Action" event."""

    sync_status: str  # SUCCESS or FAILED
    repository_prefix: str
    repository_name: str
    upstream_registry_url: str
    image_tag: str
    image_digest: str | None
    failure_code: str | None = None
    failure_reason: str | None = None

    DETAIL_TYPE: ClassVar[str] = "Pull Through Cache Action"

    def detail(self) -> dict[str, str]:
        """The event's detail with ECR's field names, so rules written for ECR's events match these too."""
        fields = {
            "sync-status": self.sync_status,
            "ecr-repository-prefix": self.repository_prefix,
            "repository-name": self.repository_name,
            "upstream-registry-url": self.upstream_registry_url,
            "image-tag": self.image_tag,
            "image-digest": self.image_digest,
            "failure-code": self.failure_code,
            "failure-reason": self.failure_reason,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class ImageExpired:
    """An image the lifecycle sweep forgot, shaped like ECR's "ECR Image Action" event for a lifecycle deletion."""

    repository_name: str  # as clients name it, rule prefix included
    image_digest: str
    image_tag: str | None  # None: a manifest pulled by digest only

    DETAIL_TYPE: ClassVar[str] = "ECR Image Action"

    def detail(self) -> dict[str, str]:
        fields = {"action-type": "DELETE", "result": "SUCCESS", "repository-name": self.repository_name,
                  "image-digest": self.image_digest, "image-tag": self.image_tag}  # fmt: skip
        return {key: value for key, value in fields.items() if value is not None}


Event = SyncEvent | ImageExpired


class EventSink(Protocol):
    def publish(self, event: Event) -> None: ...


class NoEvents:
    def publish(self, event: Event) -> None:
        pass


# -- observability --------------------------------------------------------------------------------------------------


class Metrics(Protocol):
    """Counters the service emits, named in core.metrics; Lambda publishes them as EMF metrics, `serve` as
    Prometheus counters and hourly totals per rule (what `pullthrough stats` and the status page show).
    `rule`: the scope of the rule the count belongs to; `repository`: only for IMAGE_PULL (the most pulled)."""

    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None: ...


class NoMetrics:
    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None:
        pass


class AllMetrics:
    """Every count to each of several sinks."""

    def __init__(self, *sinks: Metrics) -> None:
        self._sinks = sinks

    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None:
        for sink in self._sinks:
            sink.count(name, value, rule=rule, repository=repository)


# -- filling the cache -------------------------------------------------------------------------------------------

BlobSource = Callable[[], AbstractContextManager[UpstreamBlob]]


@dataclass(frozen=True, slots=True)
class FillJob:
    """What a filler is asked to copy: enough for another process (a fill Lambda) to do it too.

    A fill belongs to one repository of one rule: clients of another never join it, since its bytes come from
    this repository's upstream under this rule's credentials.
    """

    name: str  # as the client asked for it, rule prefix included
    scope: str
    repository: str  # as the upstream names it
    digest: Digest
    expected_size: int | None = None  # what a manifest declared, when the cache has seen it
    max_size: int | None = None  # the rule's max_blob_bytes

    @property
    def lease_key(self) -> str:
        return f"fill/{self.scope}/{self.repository}/{self.digest}"


@dataclass(frozen=True, slots=True)
class FillOrder:
    """A FillJob with what carrying it out needs: the upstream's bytes, and the record to write once stored."""

    job: FillJob
    source: BlobSource
    record: Callable[[int], None]  # the stored blob's size, recorded for the job's repository
    recorded: Callable[[], int | None]  # the size recorded already, if the blob landed before


class BlobFiller(Protocol):
    """Copies a missing blob from the upstream into the BlobStore and tells the client where to get it.

    The local filler streams to clients while it writes; a serverless one may fill and then redirect.
    `on_commit(size)` is called once the blob is verified and visible.
    """

    def fill(self, job: FillJob, source: BlobSource, on_commit: Callable[[int], None]) -> BlobBody: ...
