"""Lifecycle: forget what nobody pulls, keep what is shared or pinned, never break a pull.

Everything an image is made of is recorded in its own repository (the index, its children, their configs and layers,
the referrers-schema tags naming its digests), so both the sweep and the size cap work a repository at a time: memory
and reads are bounded by the largest repository, and a sweep that stops at its budget goes on where it stopped.

Mark: the roots of a repository are its live tags and its live manifests pulled by digest; what they reach is live
(an index's children, a manifest's config and layers, the referrers of live digests). Forget: every other record of
the repository, each by a conditional delete that spares what a client pulled, or the cache linked, since the mark
began. Bytes: a digest that no repository records any more becomes an orphan; its bytes are deleted once it has been
one for the grace period (long enough for a presigned URL handed out before, a fill or a reader in flight), and only
if still nobody records it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import asdict, dataclass, field

from core import metrics as counts
from core.digest import Digest
from core.errors import RegistryError
from core.mediatypes import blob_sizes, descriptors, parse_manifest
from core.ports import (
    MANIFEST,
    BlobStore,
    ContentEntry,
    EventSink,
    ImageExpired,
    Lifecycle,
    Metrics,
    NoEvents,
    NoMetrics,
    Orphan,
    TagEntry,
    cursor_of,
)
from core.referrers import SCHEMA_TAG
from core.rules import Rule, RuleSource

log = logging.getLogger(__name__)

SWEEP_CURSOR = "sweep"
PAGE = 100
# Records nothing reaches that were linked this recently may belong to a pull under way (its manifest not yet
# recorded): the size cap leaves them.
UNREACHED_MINIMUM_AGE_SECONDS = 600.0
FOREVER = 1e15  # a time no record was written after (DynamoDB numbers have no infinity)


def _follows_subject(tag: TagEntry) -> bool:
    """A referrers tag lives as long as the digest it names: a referrers request for it (a policy controller, a
    scanner) keeps no signature of an image nobody pulls."""
    return SCHEMA_TAG.match(tag.tag) is not None


@dataclass
class SweepReport:
    repositories: int = 0
    tags_forgotten: int = 0
    manifests_forgotten: int = 0
    blobs_forgotten: int = 0
    orphaned: int = 0  # digests nobody records any more: deleted after the grace period
    orphaned_bytes: int = 0
    deleted: int = 0  # digests whose bytes were deleted
    reclaimed_bytes: int = 0
    finished: bool = True  # False: stopped at its budget; the next run goes on
    expired: list[ImageExpired] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        document = asdict(self)
        document["expired"] = [event.detail() for event in self.expired]
        return document


@dataclass(frozen=True)
class _Image:
    """A root: a tag, or a manifest pulled by digest, and what it keeps alive."""

    scope: str
    repository: str
    tag: str | None
    digest: Digest
    pulled_at: float
    closure: frozenset[Digest]


@dataclass
class _Repository:
    scope: str
    name: str
    tags: list[TagEntry]
    content: list[ContentEntry]

    @property
    def manifests(self) -> set[Digest]:
        return {entry.digest for entry in self.content if entry.kind == MANIFEST}


class _Graph:
    """What the images of one repository reach: read from the manifests in the blob store."""

    def __init__(self, repository: _Repository, blobs: BlobStore) -> None:
        self._repository = repository
        self._blobs = blobs
        self._manifests = repository.manifests
        self._referrers: dict[str, list[TagEntry]] = {}
        for tag in repository.tags:
            match = SCHEMA_TAG.match(tag.tag)
            if match is not None:
                self._referrers.setdefault(f"{match.group(1)}:{match.group(2)}", []).append(tag)

    def closure(self, roots: set[Digest]) -> tuple[set[Digest], set[str]]:
        """The digests reachable from `roots`, and the referrers tags that keep them company."""
        live: set[Digest] = set()
        tags: set[str] = set()
        work = list(roots)
        while work:
            digest = work.pop()
            if digest in live:
                continue
            live.add(digest)
            for referrer in self._referrers.get(f"{digest.algorithm}:{digest.encoded[:64]}", []):
                tags.add(referrer.tag)
                work.append(referrer.digest)
            if digest in self._manifests:
                work.extend(self._children(digest))
        return live, tags

    def _children(self, digest: Digest) -> Iterator[Digest]:
        data = self._blobs.read(digest)
        if data is None:
            return
        try:
            document = parse_manifest(data)
        except RegistryError:
            return
        for entry in descriptors(document, "manifests"):
            try:
                yield Digest.parse(entry["digest"])
            except RegistryError:
                continue
        yield from blob_sizes(document)


class Lifecycler:
    """The sweep (rules' `expire_unpulled`), the size cap (least recently pulled first) and the deletion of orphaned
    bytes, over one metadata backend and its blob store."""

    def __init__(
        self,
        rules: RuleSource,
        lifecycle: Lifecycle,
        blobs: BlobStore,
        *,
        grace_seconds: float,
        events: EventSink | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
    ) -> None:
        self._rules = rules
        self._lifecycle = lifecycle
        self._blobs = blobs
        self._grace = grace_seconds
        self._events = events or NoEvents()
        self._metrics = metrics or NoMetrics()
        self._clock = clock
        self._dry_run = dry_run

    # -- the sweep -----------------------------------------------------------------------------------------------

    def sweep(self, *, max_repositories: int | None = None, stop_after: float | None = None) -> SweepReport:
        """Forget the images their rule lets expire, in every repository, then delete the bytes orphaned for the
        grace period. A bounded run (at most `max_repositories`, or none started after the monotonic time
        `stop_after`) goes on from where the last one stopped."""
        report = SweepReport()
        bounded = max_repositories is not None or stop_after is not None
        cursor = self._lifecycle.get_cursor(SWEEP_CURSOR) if bounded else None
        for scope, name in self._repositories(cursor):
            if (max_repositories is not None and report.repositories >= max_repositories) or (
                stop_after is not None and time.monotonic() > stop_after
            ):
                report.finished = False
                break
            report.repositories += 1
            cursor = cursor_of(scope, name)
            rule = self._rules.current().by_scope(scope)
            if rule is not None and rule.expire_unpulled is not None:
                self._sweep_repository(rule, name, report)
        if bounded and not self._dry_run:
            self._lifecycle.put_cursor(SWEEP_CURSOR, None if report.finished else cursor)
        self.delete_orphans(report)
        return report

    def _sweep_repository(self, rule: Rule, name: str, report: SweepReport) -> None:
        started = self._clock()
        # a last pull is recorded up to pull_record_seconds late: never expire early for that
        cutoff = started - (rule.expire_unpulled or 0) - rule.pull_record_seconds
        repository = self._read(rule.scope, name)

        def root_tag(tag: TagEntry) -> bool:
            return (tag.pulled_at >= cutoff and not _follows_subject(tag)) or rule.pinned(name, tag.tag)

        def root_manifest(entry: ContentEntry) -> bool:
            return entry.pulled_at is not None and entry.pulled_at >= cutoff

        live_tags, live = self._mark(repository, root_tag, root_manifest)
        self._forget(rule.client_name, repository, live_tags, live, pulled_before=cutoff, checked_before=started,
                     linked_before=lambda _: started, report=report)  # fmt: skip

    # -- the size cap --------------------------------------------------------------------------------------------

    def evict(self, usage: int, cap: int, low_water: float = 0.9) -> SweepReport:
        """Over `cap`, forget the least recently pulled images (never pinned ones) until what stays fits in
        `low_water` of it; their bytes go with the orphans, after the grace period."""
        report = SweepReport()
        if usage <= cap:
            return report
        started = self._clock()
        images, sizes, unreached, unreached_in = self._images(started)
        refcount: Counter[Digest] = Counter(digest for image in images for digest in image.closure)
        freed = sum(sizes.get(digest, 0) for digest in unreached)
        evicted: dict[tuple[str, str, str | None, Digest], None] = {}  # least recently pulled first
        released: set[Digest] = set()  # what evicted images reached: forgotten however recently linked
        rules = self._rules.current()
        for image in sorted(images, key=lambda candidate: candidate.pulled_at):
            if usage - freed <= cap * low_water:
                break
            rule = rules.by_scope(image.scope)
            if image.tag is not None and rule is not None and rule.pinned(image.repository, image.tag):
                continue
            evicted[image.scope, image.repository, image.tag, image.digest] = None
            released |= image.closure
            for digest in image.closure:
                refcount[digest] -= 1
                if refcount[digest] == 0:
                    freed += sizes.get(digest, 0)

        def linked_before(entry: ContentEntry) -> float:
            return started if entry.digest in released else started - UNREACHED_MINIMUM_AGE_SECONDS

        in_eviction_order = dict.fromkeys([(scope, name) for scope, name, _, _ in evicted] + sorted(unreached_in))
        for scope, name in in_eviction_order:
            self._release(scope, name, evicted, started, linked_before, report)
        self.delete_orphans(report)
        log.info("size cap: %d bytes over %d; forgot %d images, %d bytes to reclaim", usage, cap, len(evicted), freed)
        return report

    def _release(
        self,
        scope: str,
        name: str,
        evicted: Container[tuple[str, str, str | None, Digest]],
        started: float,
        linked_before: Callable[[ContentEntry], float],
        report: SweepReport,
    ) -> None:
        """Forget, in one repository, what only evicted images (or nothing) reached."""
        repository = self._read(scope, name)

        def root_tag(tag: TagEntry) -> bool:
            return not _follows_subject(tag) and (scope, name, tag.tag, tag.digest) not in evicted

        def root_manifest(entry: ContentEntry) -> bool:
            return entry.pulled_at is not None and (scope, name, None, entry.digest) not in evicted

        rule = self._rules.current().by_scope(scope)
        client_name = rule.client_name if rule is not None else (lambda repository: f"{scope}/{repository}")
        live_tags, live = self._mark(repository, root_tag, root_manifest)
        self._forget(client_name, repository, live_tags, live, pulled_before=started, checked_before=started,
                     linked_before=linked_before, report=report)  # fmt: skip

    def _images(self, now: float) -> tuple[list[_Image], dict[Digest, int], set[Digest], set[tuple[str, str]]]:
        """Every root in every repository with what it reaches; the sizes of recorded digests; the recorded digests
        no root reaches (old enough not to be a pull under way), and the repositories that record them."""
        images: list[_Image] = []
        sizes: dict[Digest, int] = {}
        reached: set[Digest] = set()
        recorded: dict[Digest, set[tuple[str, str]]] = {}
        for scope, name in self._repositories(None):
            repository = self._read(scope, name)
            graph = _Graph(repository, self._blobs)
            for entry in repository.content:
                sizes[entry.digest] = entry.size
                if entry.linked_at < now - UNREACHED_MINIMUM_AGE_SECONDS:
                    recorded.setdefault(entry.digest, set()).add((scope, name))
            roots: list[tuple[str | None, Digest, float]] = [(tag.tag, tag.digest, tag.pulled_at)
                                                             for tag in repository.tags
                                                             if not _follows_subject(tag)]  # fmt: skip
            roots += [(None, entry.digest, entry.pulled_at) for entry in repository.content
                      if entry.kind == MANIFEST and entry.pulled_at is not None]  # fmt: skip
            for tag, digest, pulled_at in roots:
                closure, _ = graph.closure({digest})
                images.append(_Image(scope, name, tag, digest, pulled_at, frozenset(closure)))
                reached |= closure
        unreached = {digest: where for digest, where in recorded.items() if digest not in reached}
        return images, sizes, set(unreached), set().union(*unreached.values())

    # -- shared steps --------------------------------------------------------------------------------------------

    def _repositories(self, after: str | None) -> Iterator[tuple[str, str]]:
        while True:
            page = self._lifecycle.repositories(after, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = cursor_of(*page[-1])

    def _read(self, scope: str, name: str) -> _Repository:
        return _Repository(scope, name, self._lifecycle.repository_tags(scope, name),
                           self._lifecycle.repository_content(scope, name))  # fmt: skip

    def _mark(
        self,
        repository: _Repository,
        root_tag: Callable[[TagEntry], bool],
        root_manifest: Callable[[ContentEntry], bool],
    ) -> tuple[set[str], set[Digest]]:
        live_tags = {tag.tag for tag in repository.tags if root_tag(tag)}
        roots = {tag.digest for tag in repository.tags if tag.tag in live_tags}
        roots |= {entry.digest for entry in repository.content if entry.kind == MANIFEST and root_manifest(entry)}
        live, referrer_tags = _Graph(repository, self._blobs).closure(roots)
        return live_tags | referrer_tags, live

    def _forget(
        self,
        client_name: Callable[[str], str],
        repository: _Repository,
        live_tags: set[str],
        live: set[Digest],
        *,
        pulled_before: float,
        checked_before: float,
        linked_before: Callable[[ContentEntry], float],
        report: SweepReport,
    ) -> None:
        """Forget what is not live, sparing what was pulled or linked since; count, and announce, what went."""
        scope, name = repository.scope, repository.name
        expired_tags: set[Digest] = set()
        forgotten: dict[Digest, int] = {}
        for tag in repository.tags:
            if tag.tag in live_tags:
                continue
            # a referrers tag's own requests keep it no longer than its subject: spared only if asked during the sweep
            spared_after = checked_before if _follows_subject(tag) else pulled_before
            if self._dry_run or self._lifecycle.forget_tag(
                scope, name, tag.tag, pulled_before=spared_after, checked_before=checked_before
            ):
                report.tags_forgotten += 1
                expired_tags.add(tag.digest)
                self._expired(report, ImageExpired(client_name(name), str(tag.digest), tag.tag))
        for entry in repository.content:
            if entry.digest in live:
                continue
            if not self._dry_run and not self._lifecycle.forget_content(
                scope, name, entry, pulled_before=pulled_before, linked_before=linked_before(entry)
            ):
                continue  # pulled or linked since the mark: it stays
            if entry.kind == MANIFEST:
                report.manifests_forgotten += 1
                if entry.pulled_at is not None and entry.digest not in expired_tags:  # pulled by digest only
                    self._expired(report, ImageExpired(client_name(name), str(entry.digest), None))
            else:
                report.blobs_forgotten += 1
            forgotten[entry.digest] = entry.size
        self._orphan_unreferenced(scope, name, forgotten, report)

    def _orphan_unreferenced(self, scope: str, name: str, forgotten: dict[Digest, int], report: SweepReport) -> None:
        """What a repository forgot and no other record holds is an orphan: its bytes go after the grace."""
        digests = list(forgotten)
        if self._dry_run:  # nothing was forgotten: only records of other repositories keep it
            held = {
                digest
                for digest in digests
                if any((ref.scope, ref.repository) != (scope, name) for ref in self._lifecycle.references(digest))
            }
        else:
            held = self._lifecycle.referenced(digests) if digests else set()
        for digest, size in forgotten.items():
            if digest not in held:
                report.orphaned += 1
                report.orphaned_bytes += size
                if not self._dry_run:
                    self._lifecycle.add_orphan(Orphan(digest, size, self._clock()))

    def _expired(self, report: SweepReport, event: ImageExpired) -> None:
        report.expired.append(event)
        if not self._dry_run:
            self._events.publish(event)
            self._metrics.count(counts.LIFECYCLE_EXPIRED_IMAGES)

    # -- bytes ---------------------------------------------------------------------------------------------------

    def delete_orphans(self, report: SweepReport | None = None) -> SweepReport:
        """Delete the bytes of digests orphaned for the grace period and still recorded by nobody."""
        report = report or SweepReport()
        due_before = self._clock() - self._grace
        after: Digest | None = None
        while True:
            page = self._lifecycle.orphans(after, PAGE)
            due = [orphan for orphan in page if orphan.since <= due_before]
            linked_again = self._lifecycle.referenced([orphan.digest for orphan in due]) if due else set()
            deletable = [orphan for orphan in due if orphan.digest not in linked_again]
            if not self._dry_run:
                if deletable:
                    self._blobs.delete([orphan.digest for orphan in deletable])
                    self._unlink_late_links(deletable)
                self._lifecycle.drop_orphans([orphan.digest for orphan in due])  # deleted, or not orphans any more
            report.deleted += len(deletable)
            reclaimed = sum(orphan.size for orphan in deletable)
            report.reclaimed_bytes += reclaimed
            if reclaimed and not self._dry_run:
                self._metrics.count(counts.LIFECYCLE_RECLAIMED_BYTES, reclaimed)
            if len(page) < PAGE:
                return report
            after = page[-1].digest

    def _unlink_late_links(self, deleted: list[Orphan]) -> None:
        """A record written in the instant between the last check and the deletion points at bytes that are gone:
        forget it, so that the next pull fills them again instead of being sent to nothing."""
        for digest in self._lifecycle.referenced([orphan.digest for orphan in deleted]):
            for ref in self._lifecycle.references(digest):
                log.warning("%s was linked as its bytes were deleted: forgetting that link", digest)
                entry = ContentEntry(ref.kind, digest, 0, 0.0)
                self._lifecycle.forget_content(ref.scope, ref.repository, entry, pulled_before=FOREVER,
                                               linked_before=FOREVER)  # fmt: skip
