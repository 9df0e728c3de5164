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


def test_rules_round_trip_through_their_documents_with_defaults_left_out():
    rule = Rule("hub", "https://registry-1.docker.io", library_namespace=True, credentials="env:HUB", deny=("x/*",))
    document = rule.to_dict()
    assert document == {"prefix": "hub", "upstream": "https://registry-1.docker.io", "library_namespace": True,
                        "credentials": "env:HUB", "deny": ["x/*"]}  # fmt: skip
    assert Rule.from_dict(document) == rule
    with pytest.raises(RuleInvalid, match="unknown rule settings"):
        Rule.from_dict({**document, "password": "hunter2"})


def test_upstream_repository_prefix_maps_names_like_ecr():
    rule = Rule("my-app", "https://registry.example", upstream_repository_prefix="upstream-app")
    rules = RuleSet([rule])
    assert rules.route("my-app/image1").repository == "upstream-app/image1"
    assert rules.route("my-app/team/image2").repository == "upstream-app/team/image2"
    with pytest.raises(RuleInvalid):
        Rule("", "https://registry.example", upstream_repository_prefix="x")


def test_allow_and_deny_globs_and_tag_filters():
    from core.errors import Denied

    rule = Rule("hub", "https://registry-1.docker.io", library_namespace=True, allow=("library/*", "bitnami/*"),
                deny=("library/evil*",), allowed_tags=r"v?\d+(\.\d+)*")  # fmt: skip
    rules = RuleSet([rule])
    assert rules.route("hub/alpine").repository == "library/alpine"
    assert rules.route("hub/bitnami/redis").repository == "bitnami/redis"
    for name in ("hub/someone/else", "hub/evil-thing", "hub/library/evil"):
        with pytest.raises(Denied):
            rules.route(name)
    assert rule.tag_allowed("3.20") and rule.tag_allowed("v1") and not rule.tag_allowed("latest")
    with pytest.raises(RuleInvalid):
        Rule("x", "https://a.example", allowed_tags="(")


def test_namespace_routing_finds_the_rule_for_a_registry_host():
    rules = RuleSet([Rule("docker-hub", "https://registry-1.docker.io", library_namespace=True),
                     Rule("ghcr", "https://ghcr.io"), Rule("local", "http://127.0.0.1:5001")])  # fmt: skip
    assert rules.for_namespace("docker.io", "library/alpine") == "docker-hub/library/alpine"
    assert rules.for_namespace("ghcr.io", "owner/app") == "ghcr/owner/app"
    assert rules.for_namespace("127.0.0.1:5001", "x") == "local/x"
    assert rules.for_namespace("quay.io", "x") is None
    assert rules.for_namespace("ghcr.io", "ghcr/owner/app") == "ghcr/owner/app"  # hosts.toml with the prefix


def test_root_rule_takes_what_no_prefix_matches():
    rules = RuleSet([Rule("ghcr", "https://ghcr.io"), Rule("", "https://registry-1.docker.io", library_namespace=True)])
    assert rules.route("ghcr/owner/app").rule.prefix == "ghcr"
    root = rules.route("alpine")
    assert (root.rule.prefix, root.repository, root.scope) == ("", "library/alpine", "(root)")
    assert rules.route("library/alpine").repository == "library/alpine"
    assert rules.route("bitnami/redis").repository == "bitnami/redis"
    assert [rule.prefix for rule in rules] == ["ghcr", ""]
