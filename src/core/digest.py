"""Content digests (OCI image-spec descriptor grammar) and streaming verification."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from core.errors import DigestInvalid

# algorithm ":" encoded, per the OCI image spec; only sha256 and sha512 are registered.
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
_ENCODED = {"sha256": re.compile(r"^[a-f0-9]{64}\Z"), "sha512": re.compile(r"^[a-f0-9]{128}\Z")}


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if len(text) > 256 or not _DIGEST.match(text):
            raise DigestInvalid(f"invalid digest {text[:80]!r}")
        algorithm, encoded = text.split(":", 1)
        pattern = _ENCODED.get(algorithm)
        if pattern is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if not pattern.match(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {text[:80]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @staticmethod
    def looks_like(reference: str) -> bool:
        """Tags cannot contain ':', so a reference with one is meant as a digest."""
        return ":" in reference

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


class DigestVerifier:
    """Hashes a stream chunk by chunk, so content is verified without holding it in memory."""

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self.size = 0
        self._hash = hashlib.new(expected.algorithm)

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def matches(self) -> bool:
        return self._hash.hexdigest() == self.expected.encoded
