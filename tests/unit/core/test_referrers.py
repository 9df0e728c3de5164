"""The referrers API answered for every upstream: from its referrers API where it has one, from the referrers tag
schema where it has not; cached like a tag, served stale when the upstream fails, kept fresh by the refresh."""

from __future__ import annotations

import json

import pytest

from core.cache import PullThroughCache
from core.digest import Digest
from core.errors import Unavailable
from core.mediatypes import OCI_INDEX, Accept
from core.referrers import referrers_index, referrers_tag, subject_of
from core.refresh import Refresher
from core.rules import Rule, RuleSet
from tests.conftest import TTL, Clock
from tests.fakes import FakeUpstream

SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
REPOSITORY = "library/app"
NAME = f"up/{REPOSITORY}"
ANY = Accept([])


def listed(answer: bytes) -> dict[str, str]:
    """digest -> artifactType of an answer, checked to be a valid OCI image index."""
    document = json.loads(answer)
    assert document["schemaVersion"] == 2 and document["mediaType"] == OCI_INDEX
    return {entry["digest"]: entry["artifactType"] for entry in document["manifests"]}


@pytest.fixture(params=["tag schema", "referrers API"])
def upstream(request: pytest.FixtureRequest) -> FakeUpstream:
    upstream = FakeUpstream()
    upstream.referrers_api = request.param == "referrers API"
    return upstream


def test_the_referrers_of_a_subject_are_listed_and_filtered(cache: PullThroughCache, upstream: FakeUpstream):
    subject = upstream.add_image(REPOSITORY, "v1")
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed")
    sbom = upstream.add_referrer(REPOSITORY, subject, SBOM, b'{"spdx": 1}')

    everything = cache.referrers(NAME, str(subject), None)
    assert listed(everything.data) == {str(signature): SIGNATURE, str(sbom): SBOM}
    assert not everything.filtered and everything.warning is None
    only_sboms = cache.referrers(NAME, str(subject), SBOM)
    assert listed(only_sboms.data) == {str(sbom): SBOM} and only_sboms.filtered
    assert listed(cache.referrers(NAME, str(subject), "application/unknown").data) == {}


def test_a_subject_without_referrers_gets_an_empty_index_kept_like_any_answer(
    cache: PullThroughCache, upstream: FakeUpstream, clock: Clock
):
    """An unsigned image is what an admission controller asks about most: within the TTL that is a hit, asking the
    upstream nothing (and charging no client's miss budget); after it, one request finds a new signature."""
    subject = upstream.add_image(REPOSITORY, "v1")
    assert listed(cache.referrers(NAME, str(subject), None).data) == {}
    unknown = Digest.of(b"no such manifest")
    assert listed(cache.referrers(NAME, str(unknown), None).data) == {}

    upstream.calls.clear()
    hit = cache.lookup_referrers(NAME, str(subject), None)
    assert hit is not None and listed(hit.data) == {}
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed later")
    assert listed(cache.referrers(NAME, str(subject), None).data) == {} and upstream.calls == {}
    clock.advance(TTL + 1)
    assert listed(cache.referrers(NAME, str(subject), None).data) == {str(signature): SIGNATURE}


def test_an_answer_is_kept_for_the_rules_tag_ttl(cache: PullThroughCache, upstream: FakeUpstream, clock: Clock):
    subject = upstream.add_image(REPOSITORY, "v1")
    first = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"one")
    assert cache.lookup_referrers(NAME, str(subject), None) is None  # a lookup never asks the upstream
    cache.referrers(NAME, str(subject), None)

    upstream.calls.clear()
    second = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"two")
    hit = cache.lookup_referrers(NAME, str(subject), SIGNATURE)
    assert hit is not None and listed(hit.data) == {str(first): SIGNATURE} and hit.filtered
    assert listed(cache.referrers(NAME, str(subject), None).data) == {str(first): SIGNATURE}
    assert upstream.calls == {}

    clock.advance(TTL + 1)
    assert cache.lookup_referrers(NAME, str(subject), None) is None
    assert listed(cache.referrers(NAME, str(subject), None).data) == {str(first): SIGNATURE, str(second): SIGNATURE}


def test_the_upstream_is_asked_the_way_it_answers(cache: PullThroughCache, upstream: FakeUpstream, clock: Clock):
    subject = upstream.add_image(REPOSITORY, "v1")
    upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"one")
    upstream.calls.clear()
    cache.referrers(NAME, str(subject), None)
    clock.advance(TTL + 1)
    cache.referrers(NAME, str(subject), None)
    if upstream.referrers_api:  # each revalidation is one referrers request; no tag is read
        assert upstream.calls == {"referrers": 2}
    else:  # the tag: a GET, then a HEAD to revalidate it (plus the adapter's "no API" answers)
        assert upstream.calls == {"referrers": 2, "get_manifest": 1, "head_manifest": 1}


def test_the_cached_answer_is_served_stale_while_the_upstream_fails(
    cache: PullThroughCache, upstream: FakeUpstream, clock: Clock
):
    subject = upstream.add_image(REPOSITORY, "v1")
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed")
    cache.referrers(NAME, str(subject), None)
    clock.advance(TTL + 1)
    upstream.failure = Unavailable("down")
    stale = cache.referrers(NAME, str(subject), None)
    assert listed(stale.data) == {str(signature): SIGNATURE}
    assert stale.warning is not None and "UNAVAILABLE" in stale.warning
    # with nothing cached there is nothing to serve: the client is told to retry, not told "no referrers"
    never_asked = upstream.add_image(REPOSITORY, "v2", layer=b"other")
    with pytest.raises(Unavailable):
        cache.referrers(NAME, str(never_asked), None)


def test_no_referrers_is_served_stale_too(cache: PullThroughCache, upstream: FakeUpstream, clock: Clock):
    subject = upstream.add_image(REPOSITORY, "v1")
    cache.referrers(NAME, str(subject), None)
    clock.advance(TTL + 1)
    upstream.failure = Unavailable("down")
    stale = cache.referrers(NAME, str(subject), None)
    assert listed(stale.data) == {} and stale.warning is not None


def test_referrer_manifests_and_their_blobs_pull_through(cache: PullThroughCache, upstream: FakeUpstream):
    subject = upstream.add_image(REPOSITORY, "v1")
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed payload")
    for digest in listed(cache.referrers(NAME, str(subject), None).data):
        manifest = cache.manifest(NAME, digest, ANY, with_body=True)
        assert manifest.data is not None and Digest.of(manifest.data) == signature
        for layer in json.loads(manifest.data)["layers"]:
            body = cache.blob(NAME, layer["digest"], head=False)
            assert b"".join(body.chunks(0, body.size)) == b"signed payload"  # type: ignore[union-attr]


def test_a_rules_allowed_tags_do_not_hide_referrers(cache: PullThroughCache, upstream: FakeUpstream, rules):
    cache.rule_source = RuleSet([Rule("up", "http://upstream.invalid", tag_ttl_seconds=TTL, allowed_tags=r"v.*")])
    subject = upstream.add_image(REPOSITORY, "v1")
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed")
    assert listed(cache.referrers(NAME, str(subject), None).data) == {str(signature): SIGNATURE}


def test_the_refresh_keeps_the_referrers_of_refreshed_tags_fresh(
    cache: PullThroughCache, upstream: FakeUpstream, clock: Clock
):
    subject = upstream.add_image(REPOSITORY, "v1")
    cache.manifest(NAME, "v1", ANY, with_body=True)
    first = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"one")
    cache.referrers(NAME, str(subject), None)
    clock.advance(2 * 86400)  # the referrers were asked for long ago; the image is pulled on
    cache.manifest(NAME, "v1", ANY, with_body=True)
    second = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"two")

    clock.advance(TTL + 1)
    outcomes = Refresher(cache, cache._metadata, clock=clock).refresh_stale(pulled_within_seconds=86400, limit=10)
    assert [(outcome.tag, outcome.status) for outcome in outcomes] == [("v1", "unchanged")]
    upstream.calls.clear()
    hit = cache.lookup_referrers(NAME, str(subject), None)
    assert hit is not None and listed(hit.data) == {str(first): SIGNATURE, str(second): SIGNATURE}


def test_the_refresh_finds_the_first_signature_of_an_image_asked_about_unsigned(
    cache: PullThroughCache, upstream: FakeUpstream, clock: Clock
):
    subject = upstream.add_image(REPOSITORY, "v1")
    cache.manifest(NAME, "v1", ANY, with_body=True)
    assert listed(cache.referrers(NAME, str(subject), None).data) == {}
    signature = upstream.add_referrer(REPOSITORY, subject, SIGNATURE, b"signed later")
    clock.advance(TTL + 1)
    cache.manifest(NAME, "v1", ANY, with_body=False)  # pulled on; the referrers are not asked again
    clock.advance(TTL + 1)
    Refresher(cache, cache._metadata, clock=clock).refresh_stale(pulled_within_seconds=86400, limit=10)
    hit = cache.lookup_referrers(NAME, str(subject), None)
    assert hit is not None and listed(hit.data) == {str(signature): SIGNATURE}


def test_the_referrers_tag_names_the_digest_as_the_spec_says():
    digest = Digest.of(b"x")
    assert referrers_tag(digest) == f"sha256-{digest.encoded}"
    assert subject_of(referrers_tag(digest)) == digest
    long = Digest.parse("sha512:" + "ab" * 64)
    assert referrers_tag(long) == "sha512-" + "ab" * 32  # truncated to 64 characters
    assert subject_of(referrers_tag(long)) is None and subject_of("v1") is None
    assert subject_of(f"sha256-{digest.encoded}.sig") is None


def test_an_answer_is_always_a_valid_index():
    assert listed(referrers_index(None)) == {}
    assert listed(referrers_index(b"not json")) == {}
    created = {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"}
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "1" * 64, "size": 9,
             "artifactType": SBOM, "annotations": created}  # fmt: skip
    stored = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    assert json.loads(referrers_index(stored, SBOM))["manifests"] == [entry]  # annotations kept
    assert json.loads(referrers_index(stored, SIGNATURE))["manifests"] == []
