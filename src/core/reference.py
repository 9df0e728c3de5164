"""Repository names and references (tag or digest), validated by the OCI distribution grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.digest import Digest
from core.errors import ManifestUnknown, NameInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")  # \Z: "$" would let a final newline through
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")

# Many clients cap "host/name" at 255 characters; a longer name cannot be pulled anyway.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise NameInvalid(f"invalid repository name {name[:80]!r}")
    return name


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(_NAME.match(name))


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


@dataclass(frozen=True, slots=True)
class Reference:
    """A tag or a digest, as found in /v2/<name>/manifests/<reference>."""

    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if Digest.looks_like(text):
            return cls(digest=Digest.parse(text))
        if not is_valid_tag(text):
            # distribution answers an unparseable tag as an unknown manifest, and so does the OCI conformance suite
            raise ManifestUnknown(f"invalid tag {text[:80]!r}")
        return cls(tag=text)

    def __str__(self) -> str:
        return str(self.digest) if self.digest else str(self.tag)
