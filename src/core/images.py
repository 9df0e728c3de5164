"""An image as a person reads it: what a cached manifest is, which platforms it holds, what it is made of. Read from
the stored bytes alone (never the upstream): what is not cached is shown as not cached."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.digest import Digest
from core.errors import RegistryError
from core.mediatypes import INDEX_TYPES, descriptors, parse_manifest
from core.ports import BlobStore

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; anything bigger is not read to show a platform


@dataclass(frozen=True, slots=True)
class Part:
    """A child manifest of an index, or a config or layer of an image."""

    digest: str
    media_type: str
    size: int
    platform: str = ""  # children of an index: "os/arch[/variant]"


@dataclass(frozen=True, slots=True)
class ImageView:
    digest: str
    media_type: str
    size: int
    platforms: list[str] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)  # an index's manifests
    config: Part | None = None
    layers: list[Part] = field(default_factory=list)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def total_size(self) -> int:
        """The manifest, its config and its layers: what a pull of one platform downloads."""
        return self.size + (self.config.size if self.config else 0) + sum(layer.size for layer in self.layers)


def describe(blobs: BlobStore, digest: Digest) -> ImageView | None:
    """None when the manifest's bytes are not stored."""
    data = blobs.read(digest)
    if data is None:
        return None
    try:
        document = parse_manifest(data)
    except RegistryError:
        return None
    media_type = str(document.get("mediaType", ""))
    if "manifests" in document:
        children = [_part(entry) for entry in descriptors(document, "manifests")]
        platforms = [child.platform for child in children if child.platform]
        return ImageView(str(digest), media_type, len(data), platforms, children=children)
    config_entry = document.get("config")
    config = _part(config_entry) if isinstance(config_entry, dict) and "digest" in config_entry else None
    layers = [_part(entry) for entry in descriptors(document, "layers")]
    readable = config is not None and config.size <= MAX_CONFIG_BYTES
    platforms = [_config_platform(blobs, config.digest)] if config is not None and readable else []
    return ImageView(str(digest), media_type, len(data), [p for p in platforms if p], config=config, layers=layers)


def _part(entry: dict[str, Any]) -> Part:
    size = entry.get("size")
    return Part(str(entry["digest"]), str(entry.get("mediaType", "")), size if isinstance(size, int) else 0,
                _platform(entry.get("platform")))  # fmt: skip


def _platform(document: object) -> str:
    if not isinstance(document, dict) or not document.get("os") or not document.get("architecture"):
        return ""
    parts = [document["os"], document["architecture"], document.get("variant")]
    return "/".join(str(part) for part in parts if part)


def _config_platform(blobs: BlobStore, config_digest: str) -> str:
    """An image's platform is in its config (when the config is cached)."""
    try:
        data = blobs.read(Digest.parse(config_digest))
        return _platform(json.loads(data)) if data is not None else ""
    except (RegistryError, ValueError):
        return ""
