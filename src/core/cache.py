"""The pull-through service: answer from the cache when it can, from the upstream (and remember) when it must."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core import metrics as counts
from core.breaker import GuardedUpstream
from core.declared_sizes import DeclaredSizes
from core.digest import Digest
from core.errors import (
    Denied,
    ManifestUnknown,
    NameUnknown,
    TooManyRequests,
    Unavailable,
)
from core.filling import store_bytes
from core.mediatypes import (
    INDEX_TYPES,
    OCI_INDEX,
    Accept,
    Manifest,
    blob_sizes,
    detect_media_type,
    parse_manifest,
    select_platform_child,
)
from core.paging import page
from core.ports import (
    BlobBody,
    BlobFiller,
    BlobStore,
    CacheMetadata,
    FillJob,
    FillOrder,
    LocalBlob,
    ManifestRecord,
    Metrics,
    NoMetrics,
    RateLimit,
    SizeOnly,
    TagRecord,
    Upstream,
    Upstreams,
)
from core.recent_manifests import RecentManifests
from core.reference import Reference, is_valid_tag
from core.referrers import NO_REFERRERS, referrers_index, referrers_tag, subject_of
from core.rules import Route, RuleSet, RuleSource
from core.singleflight import SingleFlight

log = logging.getLogger(__name__)

UPSTREAM_FAILURES = (Unavailable, TooManyRequests)


# A refresh leaves this share of the upstream's pull allowance (at least RESERVED_PULLS_MINIMUM) to clients.
RESERVED_PULLS_FRACTION = 0.1
RESERVED_PULLS_MINIMUM = 5


class PullsReserved(Exception):
    """A refresh would spend one of the last pulls the upstream allows: those are kept for clients."""


def _reserved_pulls(rate_limit: RateLimit) -> int:
    share = int(rate_limit.limit * RESERVED_PULLS_FRACTION) if rate_limit.limit else 0
    return max(RESERVED_PULLS_MINIMUM, share)


def _check_tag(route: Route, tag: str) -> None:
    """A rule's allowed tags limit the images pulled by tag; a referrers tag names the referrers of a digest, which
    the referrers API gives whatever the tags allowed."""
    if not route.rule.tag_allowed(tag) and subject_of(tag) is None:
        raise Denied(f"tag {tag!r} is not allowed by the cache rule")


@dataclass(frozen=True, slots=True)
class PullRecord:
    """A pull to write down (the last-pull time of a tag, or of a manifest pulled by digest), for the caller to do
    after answering."""

    scope: str
    repository: str
    tag: str | None
    digest: Digest | None
    pulled_at: float


@dataclass(frozen=True, slots=True)
class ServedManifest:
    record: ManifestRecord
    data: bytes | None  # None when only headers were asked for
    warning: str | None = None  # set when a stale copy is served because the upstream failed
    pull: PullRecord | None = None  # a lookup's pull to record (lookups write nothing themselves)


@dataclass(frozen=True, slots=True)
class ServedReferrers:
    """The referrers API's answer: an OCI image index, of one artifact type when `filtered`."""

    data: bytes
    filtered: bool
    warning: str | None = None
    pull: PullRecord | None = None


@dataclass(frozen=True, slots=True)
class TagList:
    name: str
    tags: list[str]
    has_more: bool


class PullThroughCache:
    def __init__(
        self,
        rules: RuleSource,
        metadata: CacheMetadata,
        blobs: BlobStore,
        upstreams: Upstreams,
        filler: BlobFiller,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        recent: RecentManifests | None = None,
    ) -> None:
        """`recent`: the manifests this process served, kept in memory (by default, none are)."""
        self.rule_source = rules
        self._metadata = metadata
        self._blobs = blobs
        self._upstreams = upstreams
        self._filler = filler
        self._clock = clock
        self._metrics = metrics or NoMetrics()
        self._flights = SingleFlight(metadata)
        self._declared = DeclaredSizes()
        self._recent = recent or RecentManifests.disabled()

    @property
    def rules(self) -> RuleSet:
        return self.rule_source.current()

    def upstream_of(self, name: str) -> str:
        """The URL of the upstream `name` is fetched from: the HTTP layer bounds the work waiting on each."""
        return self.rules.route(name).rule.upstream_base

    # -- lookups: the hit path, from what the cache holds, writing nothing ---------------------------------------

    def lookup_manifest(self, name: str, reference: str, accept: Accept, *, with_body: bool) -> ServedManifest | None:
        """The manifest as `manifest` would serve it, or None when that needs the upstream. A reading of the
        metadata and the store, well under a millisecond, so an async server answers hits inline; the pull it
        leaves to record is the caller's to write, after answering."""
        route = self.rules.route(name)
        ref = Reference.parse(reference)
        pull = None
        asked_at = self._clock()
        if ref.digest is not None:
            record = self._cached_manifest(route, ref.digest)
            if record is not None and _pull_due(route, record.pulled_at, asked_at):
                pull = PullRecord(route.scope, route.repository, None, ref.digest, asked_at)
        else:
            assert ref.tag is not None
            _check_tag(route, ref.tag)
            fresh = self._fresh_tag(route, ref.tag, asked_at)
            if fresh is None:
                return None
            record, pull = fresh
            if not accept.allows(record.media_type):
                cached_child = lambda child: self._cached_manifest(route, child)  # noqa: E731
                record = self._negotiate(record, accept, self._stored_manifest, cached_child)
        if record is None:
            return None
        data = self._stored_manifest(record.digest) if with_body else None
        if with_body and data is None:  # the record outlived its bytes: the full path fetches them again
            return None
        self._metrics.count(counts.TAG_HIT if ref.tag is not None else counts.MANIFEST_HIT, rule=route.scope)
        if data is not None:
            self._metrics.count(counts.SERVED_BYTES, len(data), rule=route.scope)
            if ref.tag is not None:
                self._metrics.count(counts.IMAGE_PULL, rule=route.scope, repository=route.repository)
        return ServedManifest(record, data, pull=pull)

    def lookup_blob(self, name: str, digest_text: str, *, head: bool) -> BlobBody | None:
        """Where a cached blob is, or None when it needs the upstream."""
        route = self.rules.route(name)
        digest = Digest.parse(digest_text)
        size = self._metadata.get_blob(route.scope, route.repository, digest)
        if size is None:
            return None
        body = self._blobs.locate(digest, head=head)
        if body is None or not _sizes_agree(body, size):
            return None
        self._metrics.count(counts.BLOB_HIT, rule=route.scope)
        if not head:  # a range counts its whole blob
            self._metrics.count(counts.SERVED_BYTES, size, rule=route.scope)
        return body

    def record_pull(self, pull: PullRecord) -> None:
        if pull.tag is not None:
            self._metadata.record_pull(pull.scope, pull.repository, pull.tag, pull.pulled_at)
        elif pull.digest is not None:
            self._record_manifest_pull(pull.scope, pull.repository, pull.digest, pull.pulled_at)

    def _record_manifest_pull(self, scope: str, repository: str, digest: Digest, pulled_at: float) -> None:
        self._metadata.record_manifest_pull(scope, repository, digest, pulled_at)
        self._recent.pulled(scope, repository, digest, pulled_at)

    # -- manifests ------------------------------------------------------------------------------------------------

    def manifest(
        self, name: str, reference: str, accept: Accept, *, with_body: bool, pull: bool = True
    ) -> ServedManifest:
        """`pull`: a client's pull (the refresh reads manifests too, and that keeps nothing alive)."""
        route = self.rules.route(name)
        ref = Reference.parse(reference)
        if ref.digest is not None:  # served as it is, whatever the client accepts: the spec's MUST
            record, warning = self._manifest_by_digest(route, ref.digest, pulled=pull), None
        else:
            assert ref.tag is not None
            _check_tag(route, ref.tag)
            record, warning = self._manifest_by_tag(route, ref.tag)
            if not accept.allows(record.media_type):
                index = record
                fetched_child = lambda child: self._manifest_by_digest(route, child, confirmed=True)  # noqa: E731
                negotiated = self._negotiate(index, accept, lambda _: self._read_manifest(route, index), fetched_child)
                assert negotiated is not None  # the full path fetches what it lacks
                record = negotiated
        data = self._read_manifest(route, record) if with_body else None
        if ref.tag is not None and with_body and pull:
            self._metrics.count(counts.IMAGE_PULL, rule=route.scope, repository=route.repository)
        return ServedManifest(record, data, warning)

    def _manifest_by_digest(
        self, route: Route, digest: Digest, *, confirmed: bool = False, pulled: bool = False
    ) -> ManifestRecord:
        """`confirmed`: the upstream has just said this repository has it (a tag's HEAD named it). `pulled`: a
        client asked for it by digest: that is a pull, recorded (and counted)."""
        record = self._cached_manifest(route, digest)
        if record is not None:
            if pulled:
                self._metrics.count(counts.MANIFEST_HIT, rule=route.scope)
            if pulled and _pull_due(route, record.pulled_at, self._clock()):
                self._record_manifest_pull(route.scope, route.repository, digest, self._clock())
            return record
        upstream = self._upstream(route)
        if pulled:
            self._metrics.count(counts.MANIFEST_MISS, rule=route.scope)

        def fetch() -> ManifestRecord:
            stored = self._stored_manifest(digest)
            if stored is not None:  # cached for another repository: linked once this one's upstream has it too
                media_type = None if confirmed else upstream.head_manifest(route.repository, str(digest)).media_type
                return self._link_manifest(route, digest, stored, media_type, pulled=pulled)
            fetched = upstream.get_manifest(route.repository, str(digest))
            return self._store_manifest(route, fetched.data, fetched.content_type, digest, pulled=pulled)

        key = f"manifest/{route.scope}/{route.repository}/{digest}"
        return self._flights.run(key, fetch, lambda: self._cached_manifest(route, digest))

    def _cached_manifest(self, route: Route, digest: Digest) -> ManifestRecord | None:
        """The metadata alone: records are written after the bytes, and _read_manifest refetches bytes gone since."""
        record = self._recent.record(route.scope, route.repository, digest)
        if record is None:
            record = self._metadata.get_manifest(route.scope, route.repository, digest)
            if record is not None:
                self._recent.remember_record(route.scope, route.repository, record)
        return record

    def _stored_manifest(self, digest: Digest) -> bytes | None:
        """A manifest's bytes from the blob store (verified when stored), or from memory."""
        data = self._recent.data(digest)
        if data is None:
            data = self._blobs.read(digest)
            if data is not None:
                self._recent.remember_data(digest, data)
        return data

    def _manifest_by_tag(self, route: Route, tag: str) -> tuple[ManifestRecord, str | None]:
        asked_at = self._clock()
        cached = self._metadata.get_tag(route.scope, route.repository, tag)
        if cached is not None and route.rule.tag_fresh(cached.checked_at, asked_at):
            if _pull_due(route, cached.pulled_at, asked_at):
                self._metadata.record_pull(route.scope, route.repository, tag, asked_at)
            self._metrics.count(counts.TAG_HIT, rule=route.scope)
            return cached.manifest, None
        try:
            record = self._revalidate_once(route, tag, cached, asked_at, pulled=True)
        except UPSTREAM_FAILURES as exc:
            max_stale = route.rule.max_stale_seconds
            if cached is None or (max_stale is not None and asked_at - cached.checked_at > max_stale):
                raise
            log.warning("serving stale %s/%s:%s: %s", route.scope, route.repository, tag, exc.message)
            self._metrics.count(counts.STALE_SERVED, rule=route.scope)
            return cached.manifest, f"serving a cached copy: upstream failed ({exc.code})"
        return record, None

    def confirm_tag(self, route: Route, tag: str, cached: TagRecord | None) -> ManifestRecord:
        """Ask the upstream now what `tag` points to and record the answer, as a stale pull would, but not as a pull:
        the tag stays watched only while clients pull it. A refresh raises PullsReserved rather than spend the last
        pulls the upstream allows."""
        if not is_valid_tag(tag):
            raise ManifestUnknown(f"{tag!r} is not a tag")
        _check_tag(route, tag)
        return self._revalidate_once(route, tag, cached, self._clock(), pulled=False)

    def _revalidate_once(
        self, route: Route, tag: str, cached: TagRecord | None, asked_at: float, *, pulled: bool
    ) -> ManifestRecord:
        """However many requests (or refresh runs) find the tag stale at once, one asks the upstream; the others
        use its answer."""
        upstream = self._upstream(route)
        return self._flights.run(
            f"tag/{route.scope}/{route.repository}/{tag}",
            lambda: self._revalidate(route, upstream, tag, cached, pulled=pulled),
            lambda: self._confirmed_since(route, tag, asked_at, or_fresh=pulled),
        )

    def _confirmed_since(self, route: Route, tag: str, since: float, *, or_fresh: bool) -> ManifestRecord | None:
        """The tag's record if confirmed since `since`; for a pull, also if fresh by the rule's TTL: a holder whose
        upstream answered just before this request asked (and recorded it just after) answered it too. A refresh
        asks the upstream whatever the tag's age."""
        record = self._metadata.get_tag(route.scope, route.repository, tag)
        if record is None:
            return None
        fresh = or_fresh and route.rule.tag_fresh(record.checked_at, self._clock())
        return record.manifest if record.checked_at >= since or fresh else None

    def _revalidate(
        self, route: Route, upstream: Upstream, tag: str, cached: TagRecord | None, *, pulled: bool
    ) -> ManifestRecord:
        """Ask the upstream what the tag points at now, and record it. A referrers tag is answered by the upstream's
        referrers API where it has one (the tag the schema names is then not kept up to date by its clients)."""
        subject = subject_of(tag)
        answer = upstream.referrers(route.repository, subject) if subject is not None else None
        if answer is not None:
            record, outcome = self._referrers_record(route, answer.data, answer.content_type, cached)
        elif subject is not None:
            try:
                record, outcome = self._tag_record(route, upstream, tag, cached, pulled=pulled)
            except ManifestUnknown:  # no referrers (yet): an answer too, kept like any other for the TTL
                record, outcome = self._referrers_record(route, NO_REFERRERS, OCI_INDEX, cached)
        else:
            record, outcome = self._tag_record(route, upstream, tag, cached, pulled=pulled)
        if pulled:  # a client's request (a refresh counts its own outcomes)
            self._metrics.count(outcome, rule=route.scope)
        answered_at = self._clock()  # after the upstream answered: requests that waited on this one see it as theirs
        # a refresh is not a pull: the tag stays watched only while clients pull it
        previous_pull = cached.pulled_at if cached is not None else 0.0
        pulled_at = max(previous_pull, answered_at) if pulled else previous_pull
        self._metadata.put_tag(route.scope, route.repository, tag, TagRecord(record, answered_at, pulled_at))
        return record

    def _tag_record(
        self, route: Route, upstream: Upstream, tag: str, cached: TagRecord | None, *, pulled: bool
    ) -> tuple[ManifestRecord, str]:
        """A HEAD (free on Docker Hub) tells whether the cached digest still holds; GET only what changed."""
        if cached is not None:
            head = upstream.head_manifest(route.repository, tag)
            if head.digest == cached.manifest.digest:
                return cached.manifest, counts.TAG_REVALIDATED
            if head.digest is not None:
                if not pulled:
                    self._keep_last_pulls_for_clients(route, head.digest, head.rate_limit)
                return self._manifest_by_digest(route, head.digest, confirmed=True), counts.TAG_MISS
        fetched = upstream.get_manifest(route.repository, tag)
        expected = fetched.digest or Digest.of(fetched.data)
        return self._store_manifest(route, fetched.data, fetched.content_type, expected), counts.TAG_MISS

    def _referrers_record(
        self, route: Route, index: bytes, content_type: str | None, cached: TagRecord | None
    ) -> tuple[ManifestRecord, str]:
        """A referrers answer, stored as the index it is: unchanged, only its confirmation is new."""
        digest = Digest.of(index)
        if cached is not None and cached.manifest.digest == digest:
            return cached.manifest, counts.TAG_REVALIDATED
        return self._store_manifest(route, index, content_type, digest), counts.TAG_MISS

    def _keep_last_pulls_for_clients(self, route: Route, digest: Digest, rate_limit: RateLimit | None) -> None:
        """A refresh about to GET a manifest (a pull, to Docker Hub) stops when the upstream allows only a few more."""
        if rate_limit is None or rate_limit.remaining > _reserved_pulls(rate_limit):
            return
        if self._cached_manifest(route, digest) is None:
            raise PullsReserved(f"the upstream allows {rate_limit.remaining} more pulls for now")

    def _store_manifest(
        self, route: Route, data: bytes, content_type: str | None, digest: Digest, *, pulled: bool = False
    ) -> ManifestRecord:
        media_type = detect_media_type(data, content_type)  # before storing: only registry types are kept
        store_bytes(self._blobs, digest, data)  # DigestMismatch if the bytes are not what the digest says
        self._metrics.count(counts.UPSTREAM_BYTES, len(data), rule=route.scope)
        return self._record_manifest(route, ManifestRecord(digest, media_type, len(data)), data, pulled=pulled)

    def _link_manifest(
        self, route: Route, digest: Digest, data: bytes, content_type: str | None, *, pulled: bool
    ) -> ManifestRecord:
        record = ManifestRecord(digest, detect_media_type(data, content_type), len(data))
        return self._record_manifest(route, record, data, pulled=pulled)

    def _record_manifest(self, route: Route, record: ManifestRecord, data: bytes, *, pulled: bool) -> ManifestRecord:
        if not record.is_index:  # the sizes its blobs must have, for the fills that follow
            self._declared.remember(route.scope, route.repository, blob_sizes(parse_manifest(data)))
        self._metadata.put_manifest(route.scope, route.repository, record, pulled=pulled)
        remembered = dataclasses.replace(record, pulled_at=self._clock() if pulled else None)
        self._recent.remember_record(route.scope, route.repository, remembered)
        self._recent.remember_data(record.digest, data)
        return record

    def _read_manifest(self, route: Route, record: ManifestRecord) -> bytes:
        data = self._stored_manifest(record.digest)
        if data is None:  # the metadata outlived its bytes: fetch them again
            data = self._upstream(route).get_manifest(route.repository, str(record.digest)).data
            self._store_manifest(route, data, record.media_type, record.digest)
        return data

    @staticmethod
    def _negotiate(
        record: ManifestRecord,
        accept: Accept,
        read: Callable[[Digest], bytes | None],
        child_record: Callable[[Digest], ManifestRecord | None],
    ) -> ManifestRecord | None:
        """A tag whose manifest the client does not accept: an old client asking for a manifest list gets its
        linux/amd64 image (distribution's rule); with no acceptable alternative the client gets what the tag points
        at, as distribution 3 does, rather than a 404 for a tag that exists. None: a lookup lacks what it needs."""
        if record.media_type not in INDEX_TYPES:
            return record
        data = read(record.digest)
        if data is None:
            return None
        child = select_platform_child(Manifest(data, record.media_type, record.digest))
        if child is None:
            return record
        found = child_record(child)
        if found is None:
            return None
        return found if accept.allows(found.media_type) else record

    # -- blobs ----------------------------------------------------------------------------------------------------

    def blob(self, name: str, digest_text: str, *, head: bool) -> BlobBody:
        hit = self.lookup_blob(name, digest_text, head=head)
        if hit is not None:
            return hit
        route = self.rules.route(name)
        digest = Digest.parse(digest_text)
        upstream = self._upstream(route)
        self._metrics.count(counts.BLOB_MISS, rule=route.scope)
        # Stored for another repository or rule, it is linked here once this repository's upstream shows it has it
        # too; a HEAD that misses needs only the size. Either way one upstream HEAD answers, and no bytes move.
        stored_elsewhere = self._blobs.exists(digest)
        if stored_elsewhere or head:
            upstream_size = upstream.head_blob(route.repository, digest)
            located = self._blobs.locate(digest, head=head) if stored_elsewhere else None
            if located is not None and _sizes_agree(located, upstream_size):
                stored_size = located.size if isinstance(located, LocalBlob) else upstream_size
                if stored_size is not None:
                    self._metadata.put_blob(route.scope, route.repository, digest, stored_size)
                    # The lifecycle may have deleted the bytes since they were found: this link is then forgotten
                    # by the sweep that deleted them, or filled again here.
                    if self._blobs.exists(digest):
                        return located
            if upstream_size is not None and head:
                return SizeOnly(upstream_size)
        order = self.fill_order(name, digest_text)
        return self._filler.fill(order.job, order.source, order.record)

    def fill_order(self, name: str, digest_text: str) -> FillOrder:
        """What a filler needs to copy one blob in: the job, where its bytes come from, how to record it once
        stored. A pull fills through `blob`; a process that fills on another's behalf (the serverless fill
        function) starts here."""
        route = self.rules.route(name)
        digest = Digest.parse(digest_text)
        upstream = self._upstream(route)
        scope, repository = route.scope, route.repository
        return FillOrder(
            job=self._fill_job(name, route, digest),
            source=lambda: upstream.open_blob(repository, digest),
            record=lambda size: self._record_fill(scope, repository, digest, size),
            recorded=lambda: self._metadata.get_blob(scope, repository, digest),
        )

    def _record_fill(self, scope: str, repository: str, digest: Digest, size: int) -> None:
        self._metadata.put_blob(scope, repository, digest, size)
        self._metrics.count(counts.UPSTREAM_BYTES, size, rule=scope)

    def _fill_job(self, name: str, route: Route, digest: Digest) -> FillJob:
        expected = self._declared.size(route.scope, route.repository, digest)
        return FillJob(name, route.scope, route.repository, digest, expected, route.rule.max_blob_bytes)

    # -- referrers ------------------------------------------------------------------------------------------------

    def lookup_referrers(self, name: str, digest_text: str, artifact_type: str | None) -> ServedReferrers | None:
        """The referrers of a digest from what the cache holds, or None when that needs the upstream (as
        lookup_manifest, for the referrers tag)."""
        route = self.rules.route(name)
        fresh = self._fresh_tag(route, referrers_tag(Digest.parse(digest_text)), self._clock())
        data = self._stored_manifest(fresh[0].digest) if fresh is not None else None
        if fresh is None or data is None:
            return None
        self._metrics.count(counts.TAG_HIT, rule=route.scope)
        return ServedReferrers(referrers_index(data, artifact_type), bool(artifact_type), pull=fresh[1])

    def _fresh_tag(self, route: Route, tag: str, asked_at: float) -> tuple[ManifestRecord, PullRecord | None] | None:
        """What a tag points at, when the cache may answer for it without the upstream; and its pull to record."""
        cached = self._metadata.get_tag(route.scope, route.repository, tag)
        if cached is None or not route.rule.tag_fresh(cached.checked_at, asked_at):
            return None
        due = _pull_due(route, cached.pulled_at, asked_at)
        return cached.manifest, PullRecord(route.scope, route.repository, tag, None, asked_at) if due else None

    def referrers(self, name: str, digest_text: str, artifact_type: str | None) -> ServedReferrers:
        """The referrers of a digest, always as an image index: empty when the upstream knows of none."""
        route = self.rules.route(name)
        tag = referrers_tag(Digest.parse(digest_text))
        try:
            record, warning = self._manifest_by_tag(route, tag)
            data = self._stored_manifest(record.digest)
            if data is None:  # the record outlived its bytes, which the upstream may have made for this answer only
                record = self._revalidate_once(route, tag, None, self._clock(), pulled=True)
                data, warning = self._read_manifest(route, record), None
        except (ManifestUnknown, NameUnknown):  # a repository the upstream does not know; a sha512 subject's none
            data, warning = None, None
        return ServedReferrers(referrers_index(data, artifact_type), bool(artifact_type), warning)

    # -- discovery ------------------------------------------------------------------------------------------------

    def tags(self, name: str, n: int | None, last: str | None) -> TagList:
        route = self.rules.route(name)
        if n == 0 or (n is not None and n < 0):
            return TagList(name, *page([], n, last))
        try:
            upstream_page = self._upstream(route).list_tags(route.repository, n, last)
            tags, upstream_has_more = upstream_page.tags, upstream_page.has_more
        except UPSTREAM_FAILURES:
            tags, upstream_has_more = self._metadata.list_tags(route.scope, route.repository), False
            if not tags:
                raise
        # Some registries ignore n and last (distribution 2.8 does), so page whatever came back.
        listed, more = page((tag for tag in tags if route.rule.tag_allowed(tag)), n, last)
        return TagList(name, listed, more or upstream_has_more)

    def catalog(self) -> list[str]:
        rules = {rule.scope: rule for rule in self.rules}
        # repositories of rules since removed are not listed
        return sorted(rules[scope].client_name(repository) for scope, repository in self._metadata.list_repositories()
                      if scope in rules)  # fmt: skip

    def _upstream(self, route: Route) -> Upstream:
        rule = route.rule
        return GuardedUpstream(self._upstreams.for_rule(rule), self._metadata, rule.upstream_base, rule.scope,
                               self._clock, self._metrics)  # fmt: skip


def _pull_due(route: Route, last_pull: float | None, now: float) -> bool:
    return last_pull is None or now - last_pull >= route.rule.pull_record_seconds


def _sizes_agree(body: BlobBody, size: int | None) -> bool:
    """A stored file whose size is not the recorded one (truncated behind the cache's back) is no hit."""
    return size is None or not isinstance(body, LocalBlob) or body.size == size
