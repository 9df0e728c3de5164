"""The OCI 1.1 referrers API, answered for every upstream: the cache keeps one referrers index per subject under the
referrers tag schema's name (`sha256-<hex>`), filled from the upstream's referrers API where it has one and from the
tag itself where it has not (Docker Hub, GHCR, distribution 2.8), so clients get a real index either way.

Keeping it under that tag makes it a tag like any other: revalidated after the rule's TTL, served stale when the
upstream is down, watched by the refresh while clients ask, and kept by the lifecycle exactly as long as its subject.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from core.digest import Digest
from core.errors import RegistryError
from core.mediatypes import OCI_INDEX, descriptors, parse_manifest

# The tag schema's name: the algorithm (at most 32 characters) and encoded digest (at most 64), characters a tag may
# not hold replaced by "-" (distribution spec, "Referrers Tag Schema").
_NOT_IN_TAGS = re.compile(r"[^a-zA-Z0-9._-]")
# A tag the schema names (`sha256-<hex>`), or one of cosign's beside it (`.sig`, `.att`, `.sbom`): group 1 the
# algorithm, 2 the (first 64 characters of the) encoded digest, 3 cosign's suffix.
SCHEMA_TAG = re.compile(r"^(sha256|sha512)-([a-f0-9]{64})(\.[a-z]+)?\Z")
_SUBJECT_TAG = re.compile(r"^sha256-([a-f0-9]{64})\Z")  # the only algorithm whose tag names its whole digest


def referrers_tag(subject: Digest) -> str:
    return _NOT_IN_TAGS.sub("-", f"{subject.algorithm[:32]}-{subject.encoded[:64]}")


def lists_referrers(tag: str, digest: Digest) -> bool:
    """Whether the tag is a referrers index of the schema (cosign's `.sig`, `.att` and `.sbom` tags are not) that
    lists some: a subject without referrers has the empty index, cached like any answer."""
    match = SCHEMA_TAG.match(tag)
    return match is not None and match.group(3) is None and digest != NO_REFERRERS_DIGEST


def subject_of(tag: str) -> Digest | None:
    """The subject a referrers tag stands for, when its name says it whole."""
    match = _SUBJECT_TAG.match(tag)
    return Digest("sha256", match.group(1)) if match is not None else None


def listed(stored: bytes | None) -> list[dict[str, Any]]:
    """The descriptors a stored referrers index lists (None, or an upstream's malformed index: none)."""
    try:
        return descriptors(parse_manifest(stored), "manifests") if stored is not None else []
    except RegistryError:
        return []


def referrers_index(stored: bytes | None, artifact_type: str | None = None) -> bytes:
    """The referrers API's answer from a stored referrers index: always a valid OCI image index, holding the
    descriptors of `artifact_type` only when one is given."""
    entries = listed(stored)
    if artifact_type:
        entries = [entry for entry in entries if entry.get("artifactType") == artifact_type]
    return index_of(entries)


def index_of(entries: list[dict[str, Any]]) -> bytes:
    """An OCI image index of these descriptors, as compact JSON."""
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(document, separators=(",", ":")).encode()


def artifact_types(stored: bytes) -> dict[str, int]:
    """How many referrers of each artifact type a stored referrers index lists (what the status page shows)."""
    counts = Counter(str(entry.get("artifactType") or "unknown") for entry in listed(stored))
    return dict(sorted(counts.items()))


NO_REFERRERS = referrers_index(None)
NO_REFERRERS_DIGEST = Digest.of(NO_REFERRERS)
