"""What every Upstream must do. Each implementation's test class provides `upstream` and `content` fixtures:
`content` describes one image the upstream holds (see SeededImage)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from core.digest import Digest
from core.errors import BlobUnknown, ManifestUnknown, NameUnknown
from core.mediatypes import OCI_INDEX, OCI_MANIFEST
from core.ports import Upstream


@dataclass(frozen=True)
class SeededImage:
    repository: str
    tags: tuple[str, ...]  # all point at `manifest`
    manifest: Digest
    manifest_bytes: bytes
    blob: Digest
    blob_bytes: bytes
    referrer: Digest  # an artifact whose subject is `manifest`, listed under the referrers tag schema too


SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


class UpstreamContract:
    has_referrers_api = False

    def test_head_manifest_by_tag_gives_digest_type_and_size(self, upstream: Upstream, content: SeededImage):
        head = upstream.head_manifest(content.repository, content.tags[0])
        assert head.digest == content.manifest
        assert head.media_type == OCI_MANIFEST
        assert head.size == len(content.manifest_bytes)

    def test_get_manifest_returns_the_exact_bytes(self, upstream: Upstream, content: SeededImage):
        for reference in (content.tags[0], str(content.manifest)):
            fetched = upstream.get_manifest(content.repository, reference)
            assert fetched.data == content.manifest_bytes
            assert fetched.digest in (None, content.manifest)

    def test_unknown_manifest(self, upstream: Upstream, content: SeededImage):
        with pytest.raises(ManifestUnknown):
            upstream.get_manifest(content.repository, "no-such-tag")
        with pytest.raises(ManifestUnknown):
            upstream.head_manifest(content.repository, str(Digest.of(b"nothing")))

    def test_blobs(self, upstream: Upstream, content: SeededImage):
        assert upstream.head_blob(content.repository, content.blob) == len(content.blob_bytes)
        with upstream.open_blob(content.repository, content.blob) as blob:
            assert blob.size == len(content.blob_bytes)
            assert b"".join(blob.chunks) == content.blob_bytes

    def test_unknown_blob(self, upstream: Upstream, content: SeededImage):
        missing = Digest.of(b"nothing here")
        with pytest.raises(BlobUnknown):
            upstream.head_blob(content.repository, missing)
        with pytest.raises(BlobUnknown), upstream.open_blob(content.repository, missing):
            pass

    def test_tags(self, upstream: Upstream, content: SeededImage):
        everything = upstream.list_tags(content.repository, None, None)
        all_tags = sorted([*content.tags, f"sha256-{content.manifest.encoded}"])  # the referrers tag too
        assert sorted(everything.tags) == all_tags and not everything.has_more
        # Registries may ignore n and last (distribution 2.8 does); the service pages what it gets.
        first = upstream.list_tags(content.repository, 1, None)
        assert set(first.tags) <= set(all_tags) and (first.has_more or len(first.tags) == len(all_tags))

    def test_tags_of_unknown_repository(self, upstream: Upstream, content: SeededImage):
        with pytest.raises(NameUnknown):
            upstream.list_tags("no/such/repository", None, None)

    def test_referrers_come_from_the_referrers_api_or_the_tag_schema(self, upstream: Upstream, content: SeededImage):
        answer = upstream.referrers(content.repository, content.manifest)
        if self.has_referrers_api:
            assert answer is not None
            index = json.loads(answer.data)
            assert index["mediaType"] == OCI_INDEX
            assert [(entry["digest"], entry["artifactType"]) for entry in index["manifests"]] == [
                (str(content.referrer), SIGNATURE)
            ]
            return
        assert answer is None  # the referrers tag schema holds them, as an ordinary tag
        head = upstream.head_manifest(content.repository, f"sha256-{content.manifest.encoded}")
        assert head.media_type == OCI_INDEX
        listed = upstream.get_manifest(content.repository, f"sha256-{content.manifest.encoded}")
        assert [entry["digest"] for entry in json.loads(listed.data)["manifests"]] == [str(content.referrer)]
