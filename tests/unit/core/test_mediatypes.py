from __future__ import annotations

import json

import pytest

from core.digest import Digest
from core.errors import BadUpstreamManifest
from core.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Accept,
    Manifest,
    blob_sizes,
    detect_media_type,
    parse_manifest,
    select_platform_child,
)


def test_accept_splits_lists_and_ignores_parameters():
    accept = Accept.parse([f"{OCI_MANIFEST};q=0.5, {DOCKER_MANIFEST}", OCI_INDEX])
    assert accept.allows(OCI_MANIFEST) and accept.allows(DOCKER_MANIFEST) and accept.allows(OCI_INDEX)
    assert not accept.allows(DOCKER_MANIFEST_LIST)


@pytest.mark.parametrize("headers", [[], ["*/*"], [f"{OCI_MANIFEST}, */*"]])
def test_missing_or_wildcard_accept_takes_anything(headers):
    assert Accept.parse(headers).allows(DOCKER_MANIFEST_LIST)


def test_media_type_comes_from_the_document_first():
    assert detect_media_type(json.dumps({"mediaType": OCI_INDEX}).encode(), "application/json") == OCI_INDEX
    assert detect_media_type(b'{"schemaVersion": 2}', DOCKER_MANIFEST) == DOCKER_MANIFEST
    assert detect_media_type(b'{"manifests": []}', None) == OCI_INDEX
    assert detect_media_type(b'{"layers": []}', None) == OCI_MANIFEST
    with pytest.raises(BadUpstreamManifest):
        detect_media_type(b"not json", None)
    with pytest.raises(BadUpstreamManifest):
        detect_media_type(b"[]", None)


@pytest.mark.parametrize(
    "document, content_type",
    [
        ({"mediaType": "text/html", "layers": []}, DOCKER_MANIFEST),  # a hostile upstream's declared type
        ({"schemaVersion": 2}, "text/html"),  # nothing but the header to go on
        ({"schemaVersion": 2}, None),
    ],
)
def test_only_registry_media_types_are_kept(document, content_type):
    with pytest.raises(BadUpstreamManifest):
        detect_media_type(json.dumps(document).encode(), content_type)


def test_hostile_json_is_a_bad_manifest_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BadUpstreamManifest):
        detect_media_type(deep, None)
    with pytest.raises(BadUpstreamManifest):
        parse_manifest(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    not_a_list = Manifest(json.dumps({"mediaType": OCI_INDEX, "manifests": 7}).encode(), OCI_INDEX, Digest.of(b"x"))
    assert select_platform_child(not_a_list) is None
    odd_entries = json.dumps(
        {
            "mediaType": OCI_INDEX,
            "manifests": [
                "x",
                {"platform": "linux"},
                {"digest": 5},
                {"digest": "sha256:bad", "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
    )
    assert select_platform_child(Manifest(odd_entries.encode(), OCI_INDEX, Digest.of(b"x"))) is None
    assert blob_sizes({"config": "x", "layers": [{"digest": "sha256:bad", "size": 1}, {"size": "big"}]}) == {}


def test_platform_child_selection():
    amd64, arm64 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    data = json.dumps({"mediaType": DOCKER_MANIFEST_LIST, "manifests": [
        {"digest": arm64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": amd64, "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()  # fmt: skip
    index = Manifest(data, DOCKER_MANIFEST_LIST, Digest.of(data))
    assert str(select_platform_child(index)) == amd64
    assert str(select_platform_child(index, "linux/arm64")) == arm64
    assert str(select_platform_child(index, "linux/arm64/v8")) == arm64
    assert select_platform_child(index, "linux/arm64/v7") is None
    assert select_platform_child(index, "windows/amd64") is None
