"""Manifest media types, Accept negotiation and platform selection, the way distribution does them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from core.digest import Digest
from core.errors import ManifestInvalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

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


def detect_media_type(data: bytes, content_type: str | None) -> str:
    """The manifest's own mediaType wins; registries may send a generic Content-Type."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ManifestInvalid("manifest is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type:
        return content_type.split(";", 1)[0].strip()
    if "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST


def select_platform_child(index: Manifest, platform: str = DEFAULT_PLATFORM) -> Digest | None:
    """The digest of the index entry for `platform` ("os/arch[/variant]"), as distribution picks linux/amd64 for
    clients that take no lists. Without a variant, any variant matches."""
    os_name, architecture, *variant = platform.split("/")
    for entry in json.loads(index.data).get("manifests", []):
        entry_platform = entry.get("platform") or {}
        if (entry_platform.get("os"), entry_platform.get("architecture")) != (os_name, architecture):
            continue
        if not variant or entry_platform.get("variant") == variant[0]:
            return Digest.parse(entry["digest"])
    return None
