"""An in-memory upstream registry that counts what it is asked: the double for service and API tests.

It passes the same Upstream contract suite as the real HTTP client does against a real registry.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from core.digest import Digest
from core.errors import BlobUnknown, ManifestUnknown, NameUnknown, RegistryError
from core.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from core.ports import RateLimit, TagPage, UpstreamBlob, UpstreamHead, UpstreamManifest
from core.rules import Rule


class FakeUpstream:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest -> (bytes, media type)
        self.tags: dict[tuple[str, str], str] = {}  # (repository, tag) -> digest
        self.repositories: set[str] = set()
        self.holders: dict[str, set[str]] = {}  # digest -> the repositories that have it, as a registry keeps them
        self.calls: Counter[str] = Counter()
        self.failure: RegistryError | None = None  # raised by every call while set
        self.corrupt_blobs = False  # serve wrong bytes under the right digest
        self.chunk_size = 1 << 16
        self.delay = 0.0  # seconds each call takes, so concurrent requests overlap
        self.chunk_delay = 0.0  # seconds between blob chunks: a slow download
        self.rate_limit: RateLimit | None = None  # what HEADs report of the pull allowance
        self.send_sizes = True  # False: blobs come without a Content-Length
        self.corrupt_manifests = False  # manifests arrive with a digest header their bytes do not match
        self.referrers_api = False  # True: a registry with the OCI 1.1 referrers API (else only the tag schema)

    # -- building content -----------------------------------------------------------------------------------------

    def add_blob(self, repository: str, data: bytes) -> Digest:
        digest = Digest.of(data)
        self.blobs[str(digest)] = data
        self.repositories.add(repository)
        self.holders.setdefault(str(digest), set()).add(repository)
        return digest

    def add_manifest(self, repository: str, document: dict[str, object], tag: str | None = None) -> Digest:
        data = json.dumps(document, indent=2).encode()
        digest = Digest.of(data)
        self.manifests[str(digest)] = (data, str(document["mediaType"]))
        self.repositories.add(repository)
        self.holders.setdefault(str(digest), set()).add(repository)
        if tag:
            self.tags[(repository, tag)] = str(digest)
        return digest

    def add_image(self, repository: str, tag: str | None, *, layer: bytes = b"layer", arch: str = "amd64",
                  media_type: str = OCI_MANIFEST) -> Digest:  # fmt: skip
        config_data = json.dumps({"architecture": arch, "os": "linux"}).encode()
        config = self.add_blob(repository, config_data)
        layer_digest = self.add_blob(repository, layer)
        return self.add_manifest(repository, {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(config),
                       "size": len(config_data)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(layer_digest),
                        "size": len(layer)}],
        }, tag)  # fmt: skip

    def add_index(self, repository: str, tag: str, *, docker: bool = False) -> tuple[Digest, dict[str, Digest]]:
        child_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        children = {
            arch: self.add_image(repository, None, layer=f"layer-{arch}".encode(), arch=arch, media_type=child_type)
            for arch in ("amd64", "arm64")
        }
        index = self.add_manifest(repository, {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST if docker else OCI_INDEX,
            "manifests": [{"mediaType": child_type, "digest": str(digest), "size": len(self.manifests[str(digest)][0]),
                           "platform": {"os": "linux", "architecture": arch}} for arch, digest in children.items()],
        }, tag)  # fmt: skip
        return index, children

    def add_referrer(self, repository: str, subject: Digest, artifact_type: str, payload: bytes) -> Digest:
        """An artifact whose `subject` is `subject`, pushed as a client does to a registry without the referrers API:
        the manifest, then its descriptor added to the index under the referrers tag (`sha256-<hex>`)."""
        layer = self.add_blob(repository, payload)
        empty = self.add_blob(repository, b"{}")
        subject_data, subject_type = self.manifests[str(subject)]
        digest = self.add_manifest(repository, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": str(empty), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": str(layer), "size": len(payload)}],
            "subject": {"mediaType": subject_type, "digest": str(subject), "size": len(subject_data)},
        })  # fmt: skip
        tag = f"sha256-{subject.encoded}"
        listed = self.tags.get((repository, tag))
        entries = json.loads(self.manifests[listed][0])["manifests"] if listed else []
        entries.append({"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(self.manifests[str(digest)][0]),
                        "artifactType": artifact_type})  # fmt: skip
        self.add_manifest(repository, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, tag)
        return digest

    # -- the Upstream port ----------------------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead:
        self._call("head_manifest")
        data, media_type = self._manifest(repository, reference)
        return UpstreamHead(Digest.of(data), media_type, len(data), self.rate_limit)

    def get_manifest(self, repository: str, reference: str) -> UpstreamManifest:
        self._call("get_manifest")
        data, media_type = self._manifest(repository, reference)
        return UpstreamManifest(data, media_type, Digest.of(b"something else" if self.corrupt_manifests else data))

    def head_blob(self, repository: str, digest: Digest) -> int | None:
        self._call("head_blob")
        return len(self._blob(repository, digest))

    @contextmanager
    def open_blob(self, repository: str, digest: Digest) -> Iterator[UpstreamBlob]:
        self._call("open_blob")
        data = self._blob(repository, digest)
        if self.corrupt_blobs:
            data = bytes(reversed(data)) if len(data) > 1 else b"\x00"
        yield UpstreamBlob(len(data) if self.send_sizes else None, self._chunks(data))

    def _chunks(self, data: bytes) -> Iterator[bytes]:
        for offset in range(0, len(data), self.chunk_size):
            time.sleep(self.chunk_delay)
            yield data[offset : offset + self.chunk_size]

    def list_tags(self, repository: str, n: int | None, last: str | None) -> TagPage:
        self._call("list_tags")
        if repository not in self.repositories:
            raise NameUnknown()
        tags = sorted(tag for repo, tag in self.tags if repo == repository and (last is None or tag > last))
        if n is not None and len(tags) > n:
            return TagPage(tags[:n], True)
        return TagPage(tags, False)

    def referrers(self, repository: str, subject: Digest) -> UpstreamManifest | None:
        self._call("referrers")
        if not self.referrers_api:
            return None
        if repository not in self.repositories:
            raise NameUnknown()
        entries = []
        for digest, (data, media_type) in sorted(self.manifests.items()):
            document = json.loads(data)
            if repository in self.holders[digest] and document.get("subject", {}).get("digest") == str(subject):
                artifact_type = document.get("artifactType") or document["config"]["mediaType"]
                entries.append({"mediaType": media_type, "digest": digest, "size": len(data),
                                "artifactType": artifact_type})  # fmt: skip
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        return UpstreamManifest(data, OCI_INDEX, None)

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        time.sleep(self.delay)
        if self.failure is not None:
            raise self.failure

    def _manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        digest = reference if ":" in reference else self.tags.get((repository, reference))
        if digest not in self.manifests or not self._holds(repository, digest):
            raise ManifestUnknown()
        return self.manifests[digest]

    def _blob(self, repository: str, digest: Digest) -> bytes:
        if str(digest) not in self.blobs or not self._holds(repository, str(digest)):
            raise BlobUnknown()
        return self.blobs[str(digest)]

    def _holds(self, repository: str, digest: str) -> bool:
        """Content added directly (not through add_*) is in every repository the fake knows."""
        holders = self.holders.get(digest)
        return repository in holders if holders is not None else repository in self.repositories


class FakeUpstreams:
    """Every rule leads to the same fake registry; `rules_seen` tells which rules were used."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.rules_seen: list[Rule] = []

    def for_rule(self, rule: Rule) -> FakeUpstream:
        self.rules_seen.append(rule)
        return self.upstream
