"""Manifest media types, Accept negotiation and platform selection, the way distribution does them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.digest import Digest
from core.errors import BadUpstreamManifest, RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# The only types a manifest is stored and served as: whatever else an upstream claims (text/html, say) would be
# rendered by a browser from the cache's origin.
MANIFEST_TYPES = INDEX_TYPES | {
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    "application/vnd.oci.artifact.manifest.v1+json",  # OCI 1.1 release candidates; still in some registries
    "application/vnd.docker.distribution.manifest.v1+json",  # schema 1, for the oldest images
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}

# What the cache asks its upstreams for: everything, so one upstream answer serves every client.
UPSTREAM_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

DEFAULT_PLATFORM = "linux/amd64"


class Accept:
    """The manifest types a client accepts; q-values are ignored, as distribution ignores them."""

    def __init__(self, media_types: Iterable[str]) -> None:
        self._types = frozenset(media_types)
        self._anything = not self._types or "*/*" in self._types

    @classmethod
    def parse(cls, headers: Iterable[str]) -> Accept:
        types = []
        for header in headers:
            for part in header.split(","):
                media_type = part.split(";", 1)[0].strip().lower()
                if media_type:
                    types.append(media_type)
        return cls(types)

    def allows(self, media_type: str) -> bool:
        return self._anything or media_type in self._types


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as stored: the exact upstream bytes, with the type and digest that go with them."""

    data: bytes
    media_type: str
    digest: Digest


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest's JSON object; BadUpstreamManifest for anything else (a document nested too deeply to parse
    included)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadUpstreamManifest("the upstream's manifest is not valid JSON") from exc
    if not isinstance(document, dict):
        raise BadUpstreamManifest("the upstream's manifest is not a JSON object")
    return document


def detect_media_type(data: bytes, content_type: str | None) -> str:
    """The manifest's own mediaType wins; registries may send a generic Content-Type. Only manifest types pass."""
    document = parse_manifest(data)
    declared = document.get("mediaType")
    if declared is not None:
        if declared not in MANIFEST_TYPES:
            raise BadUpstreamManifest(f"the upstream's manifest declares media type {str(declared)[:80]!r}")
        return str(declared)
    header = content_type.split(";", 1)[0].strip().lower() if content_type else ""
    if header in MANIFEST_TYPES:
        return header
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document or "layers" in document:
        return OCI_MANIFEST
    raise BadUpstreamManifest(f"the upstream sent a document of type {header[:80]!r}, not a manifest")


def descriptors(document: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The descriptors under `field` ("manifests", "layers") that have a digest; anything malformed is skipped."""
    entries = document.get(field)
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("digest"), str)]


def blob_sizes(document: dict[str, Any]) -> dict[Digest, int]:
    """The config and layers an image manifest declares, with their declared sizes."""
    config = document.get("config")
    found: dict[Digest, int] = {}
    for entry in [config, *descriptors(document, "layers")]:
        if isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("digest"), str):
            try:
                found[Digest.parse(entry["digest"])] = entry["size"]
            except RegistryError:
                continue
    return found


def select_platform_child(index: Manifest, platform: str = DEFAULT_PLATFORM) -> Digest | None:
    """The digest of the index entry for `platform` ("os/arch[/variant]"), as distribution picks linux/amd64 for
    clients that take no lists. Without a variant, any variant matches."""
    os_name, architecture, *variant = platform.split("/")
    for entry in descriptors(parse_manifest(index.data), "manifests"):
        entry_platform = entry.get("platform")
        if not isinstance(entry_platform, dict):
            continue
        if (entry_platform.get("os"), entry_platform.get("architecture")) != (os_name, architecture):
            continue
        if not variant or entry_platform.get("variant") == variant[0]:
            try:
                return Digest.parse(entry["digest"])
            except RegistryError:
                return None
    return None
