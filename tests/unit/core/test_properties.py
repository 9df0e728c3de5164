"""Property-based tests of the parsers that read what clients and upstreams send: any input ends in a value or in
the one error that input deserves, never in anything else."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.auth import requested_repositories
from core.digest import Digest
from core.errors import DigestInvalid, ManifestUnknown, NameInvalid
from core.reference import Reference, is_valid_name, validate_name
from handlers.http.ranges import parse_range
from pullthrough_adapters.upstream.auth import parse_challenge

NAME = r"\A[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z"
TAG = r"\A[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z"
printable = st.text(alphabet=string.printable + "é\x00/%:", max_size=300)


@given(printable)
def test_any_reference_is_a_tag_a_digest_or_refused(text: str):
    try:
        reference = Reference.parse(text)
    except (ManifestUnknown, DigestInvalid):
        return
    assert (reference.tag is None) != (reference.digest is None)
    assert str(reference) == text


@given(st.from_regex(TAG))
def test_every_grammatical_tag_is_accepted(tag: str):
    assert Reference.parse(tag).tag == tag


@given(st.binary(min_size=0, max_size=64))
def test_digests_round_trip(data: bytes):
    digest = Digest.of(data)
    assert Digest.parse(str(digest)) == digest


@given(st.one_of(printable, st.from_regex(r"\Asha(256|512):[0-9a-f]{64,128}\Z")))
def test_any_digest_text_parses_or_is_digest_invalid(text: str):
    try:
        digest = Digest.parse(text)
    except DigestInvalid:
        return
    assert str(digest) == text and digest.algorithm in ("sha256", "sha512")


@given(st.one_of(printable, st.from_regex(NAME)))
def test_names_are_valid_exactly_by_the_grammar_and_length(text: str):
    grammatical = re.match(NAME, text) is not None and len(text) <= 255
    assert is_valid_name(text) == grammatical
    if grammatical:
        assert validate_name(text) == text
    else:
        with pytest.raises(NameInvalid):
            validate_name(text)


@settings(max_examples=200)
@given(st.from_regex(NAME).filter(lambda name: len(name) <= 255))
def test_every_grammatical_name_is_accepted_and_has_no_dot_segments(name: str):
    assert validate_name(name) == name
    assert ".." not in name.split("/") and "." not in name.split("/")


@given(printable)
def test_challenge_parser_never_raises(header: str):
    challenge = parse_challenge(header)
    assert challenge is None or challenge.scheme in ("bearer", "basic")


@given(st.dictionaries(st.sampled_from(["realm", "service", "scope"]),
                       st.text(alphabet=string.ascii_letters + string.digits + ":/._-", min_size=1, max_size=40),
                       min_size=1))  # fmt: skip
def test_well_formed_challenges_round_trip(params: dict[str, str]):
    header = "Bearer " + ",".join(f'{key}="{value}"' for key, value in params.items())
    challenge = parse_challenge(header)
    assert challenge is not None and challenge.params == params


@given(printable, st.integers(min_value=0, max_value=10**12))
def test_range_parser_never_raises_and_stays_within_the_blob(header: str, size: int):
    parsed = parse_range(header, size)
    if parsed is not None:
        start, end = parsed
        assert start >= 0 and (end <= size - 1 or end < start or start >= size)


@given(st.lists(printable, max_size=20))
def test_token_scopes_yield_only_grammatical_names(scopes: list[str]):
    repositories = requested_repositories(scopes)
    assert len(repositories) <= 10 and all(is_valid_name(name) for name in repositories)
