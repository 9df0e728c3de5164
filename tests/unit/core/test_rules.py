from __future__ import annotations

import pytest

from core.errors import NameInvalid, NameUnknown
from core.rules import Rule, RuleInvalid, RuleSet


def test_longest_prefix_wins_and_segments_match_whole():
    rules = RuleSet(
        [Rule("a", "https://a.example"), Rule("a/b", "https://ab.example"), Rule("ab", "https://x.example")]
    )
    assert rules.route("a/b/c").rule.prefix == "a/b"
    assert rules.route("a/b/c").repository == "c"
    assert rules.route("a/c").rule.prefix == "a"
    assert rules.route("ab/c").rule.prefix == "ab"
    with pytest.raises(NameUnknown):
        rules.route("abc/d")
    with pytest.raises(NameUnknown):
        rules.route("a")  # a prefix alone names no repository


def test_library_namespace_applies_to_one_segment_names_only():
    rule = Rule("hub", "https://registry-1.docker.io", library_namespace=True)
    assert rule.upstream_repository("alpine") == "library/alpine"
    assert rule.upstream_repository("library/alpine") == "library/alpine"
    assert rule.upstream_repository("bitnami/redis") == "bitnami/redis"


def test_route_validates_the_name_before_anything_else():
    with pytest.raises(NameInvalid):
        RuleSet([Rule("a", "https://a.example")]).route("a/../b")


@pytest.mark.parametrize(
    "prefix, upstream",
    [("Bad", "https://a.example"), ("a/", "https://a.example"), ("a", "ftp://a.example"), ("a", "https://"),
     ("a", "https://a.example/v2"), ("a", "https://a.example?x=1"), ("a", "file:///etc")],
)  # fmt: skip
def test_invalid_rules(prefix, upstream):
    with pytest.raises(RuleInvalid):
        Rule(prefix, upstream)


def test_duplicate_prefixes_and_negative_ttl_are_refused():
    with pytest.raises(RuleInvalid):
        RuleSet([Rule("a", "https://a.example"), Rule("a", "https://b.example")])
    with pytest.raises(RuleInvalid):
        Rule("a", "https://a.example", tag_ttl_seconds=-1)


def test_password_stays_out_of_repr():
    assert "hunter2" not in repr(Rule("a", "https://a.example", username="u", password="hunter2"))


def test_root_rule_takes_what_no_prefix_matches():
    rules = RuleSet([Rule("ghcr", "https://ghcr.io"), Rule("", "https://registry-1.docker.io", library_namespace=True)])
    assert rules.route("ghcr/owner/app").rule.prefix == "ghcr"
    root = rules.route("alpine")
    assert (root.rule.prefix, root.repository, root.scope) == ("", "library/alpine", "(root)")
    assert rules.route("library/alpine").repository == "library/alpine"
    assert rules.route("bitnami/redis").repository == "bitnami/redis"
    assert [rule.prefix for rule in rules] == ["ghcr", ""]
