from __future__ import annotations

import json

import pytest

from core.digest import Digest
from core.errors import ManifestInvalid
from core.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Accept,
    Manifest,
    detect_media_type,
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
    with pytest.raises(ManifestInvalid):
        detect_media_type(b"not json", None)
    with pytest.raises(ManifestInvalid):
        detect_media_type(b"[]", None)


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
