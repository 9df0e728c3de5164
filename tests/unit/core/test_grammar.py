"""References, digests and names by the OCI grammar: what is accepted, and which error the rest gets."""

from __future__ import annotations

import pytest

from core.digest import Digest, DigestVerifier
from core.errors import DigestInvalid, ManifestUnknown, NameInvalid
from core.reference import Reference, validate_name

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize("name", ["a", "library/alpine", "a/b/c/d", "my-app", "my__app", "a.b_c-d", "a---b", "x" * 255])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A", "Library/alpine", "-a", "a-", "a//b", "/a", "a/", "a/../b", "..", "a%2Fb", "a b", "a:b", "a___b",
     "x" * 256, "a/.b", "é"],
)  # fmt: skip
def test_invalid_names(name):
    with pytest.raises(NameInvalid):
        validate_name(name)


def test_digest_round_trip_and_hashing():
    digest = Digest.parse(SHA)
    assert str(digest) == SHA and digest.algorithm == "sha256"
    assert Digest.of(b"") == Digest.parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert Digest.parse("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "text",
    ["sha256:totallywrong", "sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "sha256", ":abc",
     "sha256:../../etc/passwd", "sha256:" + "a" * 64 + "/x", "sha512:" + "a" * 64, "x" * 300],
)  # fmt: skip
def test_invalid_digests(text):
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_verifier_streams():
    verifier = DigestVerifier(Digest.of(b"hello world"))
    for chunk in (b"hello", b" ", b"world"):
        verifier.update(chunk)
    assert verifier.matches() and verifier.size == 11
    verifier.update(b"!")
    assert not verifier.matches()


def test_references():
    assert Reference.parse("latest").tag == "latest"
    assert Reference.parse("v1.2.3-rc_1").tag == "v1.2.3-rc_1"
    assert str(Reference.parse(SHA).digest) == SHA
    assert Reference.parse("_x" + "y" * 126).tag


@pytest.mark.parametrize("text", [".INVALID_MANIFEST_NAME", "-x", "a" * 129, "a/b", ""])
def test_invalid_tags_are_unknown_manifests_like_distribution_says(text):
    with pytest.raises(ManifestUnknown):
        Reference.parse(text)


def test_malformed_digest_reference_is_digest_invalid():
    with pytest.raises(DigestInvalid):
        Reference.parse("sha256:totallywrong")
