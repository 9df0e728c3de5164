"""Warming one image through a cache: its manifest, the children of an index for the platforms asked for, then
every config and layer, each one fetched until the cache has it (see client.py for what confirms that)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.digest import Digest
from core.errors import ManifestUnknown, RegistryError
from core.mediatypes import INDEX_TYPES, Manifest, blob_sizes, descriptors, detect_media_type, parse_manifest
from core.reference import is_valid_name, is_valid_tag
from pullthrough_adapters.warming.client import BlobAnswer, CacheClient, PullFailed


@dataclass(frozen=True, slots=True)
class Image:
    """A name as clients pull it through the cache, and a tag or a digest."""

    name: str
    reference: str

    @classmethod
    def parse(cls, text: str) -> Image:
        """NAME[:TAG][@DIGEST], as `docker pull` takes it (no tag: latest; a digest wins over a tag); ValueError
        for anything else."""
        named, _, digest = text.strip().partition("@")
        name, tag = named, "latest"
        if ":" in named.rsplit("/", 1)[-1]:
            name, tag = named.rsplit(":", 1)
        if not is_valid_name(name):
            raise ValueError(f"{text!r}: not a repository name (give it as the cache serves it: PREFIX/NAME:TAG)")
        if not digest:
            if not is_valid_tag(tag):
                raise ValueError(f"{text!r}: {tag!r} is not a tag")
            return cls(name, tag)
        try:
            return cls(name, str(Digest.parse(digest)))
        except RegistryError as exc:
            raise ValueError(f"{text!r}: {exc.message}") from exc

    def __str__(self) -> str:
        return f"{self.name}{'@' if Digest.looks_like(self.reference) else ':'}{self.reference}"


@dataclass(slots=True)
class ImageReport:
    """What warming one image did. `size` is what the manifests declare for the blobs. Each blob was either
    cached already (and not read again) or fetched from the upstream by this run (as the cache said; a cache that
    does not say counts as fetched); a fetched blob was read through the cache (`bytes_read`) or answered with a
    redirect to where the cache stores it (`redirected`)."""

    image: Image
    manifests: int = 0
    blobs: int = 0
    size: int = 0
    cached_blobs: int = 0
    cached_bytes: int = 0
    fetched_bytes: int = 0
    bytes_read: int = 0
    redirected_blobs: int = 0
    redirected_bytes: int = 0
    error: str | None = None


class WarmEvents(Protocol):
    """What the display is told; called from the threads that warm images."""

    def started(self, image: Image) -> None: ...

    def planned(self, report: ImageReport) -> None: ...

    def blob_started(self, image: Image, digest: Digest, size: int) -> None: ...

    def confirmed(self, image: Image, size: int) -> None:
        """`size` more bytes are in the cache: read through it, or a whole blob it redirected to."""

    def blob_done(self, image: Image, digest: Digest, size: int, answer: BlobAnswer) -> None: ...

    def waiting(self, image: Image, reason: str) -> None: ...

    def finished(self, report: ImageReport) -> None: ...


class Warmer:
    """`platforms` ("os/arch[/variant]"): the children of an index to warm; none: all of them."""

    def __init__(self, client: CacheClient, platforms: Sequence[str], events: WarmEvents) -> None:
        self._client = client
        self._platforms = platforms
        self._events = events

    def warm(self, image: Image) -> ImageReport:
        report = ImageReport(image)
        self._events.started(image)
        try:
            blobs = self._blobs_of(image, report)
            report.blobs, report.size = len(blobs), sum(blobs.values())
            self._events.planned(report)
            for digest, size in blobs.items():
                self._warm_blob(image, digest, size, report)
        except PullFailed as exc:
            report.error = str(exc)
        except RegistryError as exc:  # what the manifests say: unreadable, or no such platform
            report.error = f"{exc.code}: {exc.message}"
        self._events.finished(report)
        return report

    def _blobs_of(self, image: Image, report: ImageReport) -> dict[Digest, int]:
        """Every config and layer of the image (of the platforms asked for), with the sizes the manifests declare."""
        blobs: dict[Digest, int] = {}
        pending = [self._manifest(image, image.reference)]
        while pending:
            manifest = pending.pop(0)
            report.manifests += 1
            document = parse_manifest(manifest.data)
            if detect_media_type(manifest.data, manifest.media_type) in INDEX_TYPES:
                pending += [self._manifest(image, str(child)) for child in self._children(image, document)]
            else:
                blobs.update(blob_sizes(document))
        return blobs

    def _manifest(self, image: Image, reference: str) -> Manifest:
        return self._client.manifest(image.name, reference, lambda reason: self._events.waiting(image, reason))

    def _children(self, image: Image, index: dict[str, Any]) -> list[Digest]:
        entries = descriptors(index, "manifests")
        chosen = entries
        if self._platforms:
            chosen = [entry for entry in entries if any(_matches(entry, wanted) for wanted in self._platforms)]
            missing = [wanted for wanted in self._platforms if not any(_matches(entry, wanted) for entry in entries)]
            if missing:
                listed = ", ".join(sorted({_platform_of(entry) for entry in entries})) or "none"
                raise ManifestUnknown(f"{image} has no {', '.join(missing)} (its index lists {listed})")
        return [Digest.parse(entry["digest"]) for entry in chosen]

    def _warm_blob(self, image: Image, digest: Digest, size: int, report: ImageReport) -> None:
        self._events.blob_started(image, digest, size)
        answer = self._client.blob(
            image.name,
            digest,
            waiting=lambda reason: self._events.waiting(image, reason),
            received=lambda count: self._events.confirmed(image, count),
        )
        if answer.redirected:
            report.redirected_blobs += 1
            report.redirected_bytes += size
        if answer.cached:
            report.cached_blobs += 1
            report.cached_bytes += size
        else:
            report.fetched_bytes += size
        if answer.bytes_read == 0:  # not read here: the whole blob is confirmed at once
            self._events.confirmed(image, size)
        report.bytes_read += answer.bytes_read
        self._events.blob_done(image, digest, size, answer)


def _matches(entry: dict[str, Any], wanted: str) -> bool:
    """Whether an index entry is for `wanted` ("os/arch[/variant]"); without a variant, any variant matches."""
    os_name, architecture, *variant = wanted.split("/")
    platform = entry.get("platform")
    if not isinstance(platform, dict):
        return False
    if (platform.get("os"), platform.get("architecture")) != (os_name, architecture):
        return False
    return not variant or platform.get("variant") == variant[0]


def _platform_of(entry: dict[str, Any]) -> str:
    platform = entry.get("platform")
    if not isinstance(platform, dict):
        return "unknown"
    return "/".join(str(part) for part in (platform.get("os"), platform.get("architecture"), platform.get("variant"))
                    if part)  # fmt: skip
