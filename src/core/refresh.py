"""Keeping pulled tags fresh in the background: the scheduled job, and the manual refresh of one image."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core import metrics as counts
from core.cache import PullsReserved, PullThroughCache
from core.digest import Digest
from core.errors import RegistryError
from core.mediatypes import Accept, Manifest, blob_sizes, parse_manifest, select_platform_child
from core.ports import EventSink, ManifestRecord, Metrics, NoEvents, NoMetrics, StreamedBlob, SyncEvent, TagStore
from core.referrers import referrers_tag, subject_of
from core.rules import Route

log = logging.getLogger(__name__)

ANY_MANIFEST = Accept([])


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    name: str
    tag: str
    status: str  # "unchanged", "updated", "deferred" (the upstream's last pulls are kept for clients) or "failed"
    digest: str | None
    previous_digest: str | None
    reason: str | None = None  # why it failed ("CODE: message") or was deferred


class Refresher:
    """Revalidates tags through the cache (under the same leases as pulls), and says what changed."""

    def __init__(
        self,
        cache: PullThroughCache,
        tags: TagStore,
        events: EventSink | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._tags = tags
        self._events = events or NoEvents()
        self._metrics = metrics or NoMetrics()
        self._clock = clock

    def refresh_tag(self, name: str, tag: str) -> RefreshOutcome:
        """Revalidate one tag now, whatever its age: what changed?"""
        return self._refresh(name, tag)

    def refresh_stale(self, *, pulled_within_seconds: float, limit: int) -> list[RefreshOutcome]:
        """Revalidate up to `limit` stale tags that clients pulled recently, least recently confirmed first, so the
        next pull is a hit. Each revalidated tag counts as confirmed, so the next run carries on with the rest."""
        now = self._clock()
        outcomes: list[RefreshOutcome] = []
        for rule in self._cache.rules:
            if rule.tag_ttl_seconds == 0:  # revalidated on every pull anyway
                continue
            budget = limit - len(outcomes)
            if budget <= 0:
                break
            stale = self._tags.stale_tags(rule.scope, now - rule.tag_ttl_seconds, now - pulled_within_seconds, budget)
            # routed again by the name a client pulls: a rule changed since the pull may now deny it
            outcomes += [self._refresh(rule.client_name(repository), tag) for repository, tag in stale]
        return outcomes

    def _refresh(self, name: str, tag: str) -> RefreshOutcome:
        try:
            route = self._cache.rules.route(name)
        except RegistryError as exc:  # no rule leads there (any more), or it denies the name
            self._metrics.count(counts.REFRESH_FAILED)
            return RefreshOutcome(name, tag, "failed", None, None, f"{exc.code}: {exc.message}")
        cached = self._tags.get_tag(route.scope, route.repository, tag)
        previous = str(cached.manifest.digest) if cached is not None else None
        try:
            record = self._cache.confirm_tag(route, tag, cached)
        except PullsReserved as exc:  # not a failure: the tag moved, and the next run (or pull) fetches it
            self._metrics.count(counts.REFRESH_DEFERRED, rule=route.scope)
            return RefreshOutcome(name, tag, "deferred", previous, previous, f"{exc}; kept for clients")
        except RegistryError as exc:
            self._metrics.count(counts.REFRESH_FAILED, rule=route.scope)
            self._publish(route, tag, None, exc)
            return RefreshOutcome(name, tag, "failed", previous, previous, f"{exc.code}: {exc.message}")
        if subject_of(tag) is None:
            self._refresh_referrers(route, record)
        if str(record.digest) == previous:
            self._metrics.count(counts.REFRESH_UNCHANGED, rule=route.scope)
            return RefreshOutcome(name, tag, "unchanged", previous, previous)
        self._metrics.count(counts.REFRESH_UPDATED, rule=route.scope)
        self._publish(route, tag, str(record.digest), None)
        self._prefetch(route, name, record)
        return RefreshOutcome(name, tag, "updated", str(record.digest), previous)

    def _refresh_referrers(self, route: Route, record: ManifestRecord) -> None:
        """The referrers the cache keeps for a refreshed tag's image, revalidated with it once stale: a new signature
        on an unchanged image shows up without a client asking. What fails here is the next request's to retry."""
        tag = referrers_tag(record.digest)
        cached = self._tags.get_tag(route.scope, route.repository, tag)
        if cached is None or route.rule.tag_fresh(cached.checked_at, self._clock()):
            return
        try:
            self._cache.confirm_tag(route, tag, cached)
        except (PullsReserved, RegistryError) as exc:
            log.warning("refreshing the referrers of %s in %s failed: %s", record.digest, route.repository, exc)

    def _prefetch(self, route: Route, name: str, record: ManifestRecord) -> None:
        """Fetch the blobs of the rule's prefetch platforms, so that even the first pull after a move is a hit.
        The tag itself is refreshed either way: what fails here can still come on the first pull."""
        if not route.rule.prefetch_platforms:
            return
        try:
            images = [self._manifest(name, record.digest)]
            if record.is_index:
                children = (select_platform_child(images[0], platform) for platform in route.rule.prefetch_platforms)
                images = [self._manifest(name, child) for child in children if child is not None]
        except RegistryError as exc:
            log.warning("prefetch for %s failed: %s", name, exc.message)
            return
        for image in images:
            for digest in blob_sizes(parse_manifest(image.data)):  # the config and layers
                try:
                    self._fetch_blob(name, str(digest))
                except RegistryError as exc:
                    log.warning("prefetch of %s for %s failed: %s", digest, name, exc.message)

    def _fetch_blob(self, name: str, digest: str) -> None:
        """As a pull would, through the cache's filler (and its leases): a streamed fill is read to its end, so
        that it lands; on Lambda a large one goes to the fill function."""
        body = self._cache.blob(name, digest, head=False)
        if isinstance(body, StreamedBlob):
            for _ in body.chunks(0, body.size):
                pass
            body.stored()

    def _manifest(self, name: str, digest: Digest) -> Manifest:
        served = self._cache.manifest(name, str(digest), ANY_MANIFEST, with_body=True, pull=False)
        assert served.data is not None
        return Manifest(served.data, served.record.media_type, served.record.digest)

    def _publish(self, route: Route, tag: str, digest: str | None, failure: RegistryError | None) -> None:
        self._events.publish(
            SyncEvent(
                sync_status="FAILED" if failure else "SUCCESS",
                repository_prefix=route.rule.prefix,
                repository_name=route.repository,
                upstream_registry_url=route.rule.upstream,
                image_tag=tag,
                image_digest=digest,
                failure_code=failure.code if failure else None,
                failure_reason=failure.message if failure else None,
            )
        )
