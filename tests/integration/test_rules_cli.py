"""`pullthrough rules` against the local backend (the same commands take --table for a deployment)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from handlers.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["rules", *args])
    return result.exit_code, result.output


def test_create_describe_update_delete(tmp_path: Path):
    data = ["--data-dir", str(tmp_path)]
    code, _ = run(
        "create", "hub", "--preset", "docker-hub", "--credentials", "env:HUB", "--deny", "library/bad*", *data
    )
    assert code == 0
    code, _ = run("create", "internal", "--upstream", "https://registry.internal.example", "--tag-ttl", "300", *data)
    assert code == 0
    code, output = run("create", "hub", "--upstream", "https://x.example", *data)
    assert code != 0 and "exists" in output
    code, output = run("describe", "hub", *data, "--output", "json")
    hub = {"prefix": "hub", "upstream": "https://registry-1.docker.io", "library_namespace": True,
           "credentials": "env:HUB", "deny": ["library/bad*"]}  # fmt: skip
    assert json.loads(output) == [hub]
    code, output = run(
        "update", "internal", "--allowed-tags", r"v\d+", "--max-stale", "3600", *data, "--output", "json"
    )
    internal = {"prefix": "internal", "upstream": "https://registry.internal.example", "tag_ttl_seconds": 300,
                "allowed_tags": r"v\d+", "max_stale_seconds": 3600}  # fmt: skip
    assert json.loads(output)[0] == internal
    code, output = run("describe", *data)
    lines = output.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["prefix", "upstream"] and len(lines) == 3
    assert run("delete", "internal", *data)[0] == 0
    assert run("delete", "internal", *data)[0] != 0
    assert [rule["prefix"] for rule in json.loads(run("describe", *data, "--output", "json")[1])] == ["hub"]


def test_invalid_settings_are_refused_with_the_reason(tmp_path: Path):
    code, output = run("create", "x", "--upstream", "ftp://x.example", "--data-dir", str(tmp_path))
    assert code != 0 and "not an http(s) registry URL" in output
    code, output = run("create", "Bad Prefix", "--upstream", "https://x.example", "--data-dir", str(tmp_path))
    assert code != 0 and "prefix" in output


def test_apply_syncs_declaratively(tmp_path: Path):
    data = ["--data-dir", str(tmp_path)]
    run("create", "old", "--upstream", "https://old.example", *data)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - {prefix: new, upstream: 'https://new.example'}\n")
    assert run("apply", str(rules_file), *data)[0] == 0
    assert [r["prefix"] for r in json.loads(run("describe", *data, "--output", "json")[1])] == ["new", "old"]
    assert run("apply", str(rules_file), "--prune", *data)[0] == 0
    assert [r["prefix"] for r in json.loads(run("describe", *data, "--output", "json")[1])] == ["new"]


def test_pull_keys_from_the_command_line(tmp_path: Path):
    def keys(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["keys", *args, "--data-dir", str(tmp_path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
        return result.exit_code, result.output

    code, output = keys("create", "ci", "--prefix", "Bad Prefix")
    assert code == 2 and "not a repository name prefix" in output
    code, output = keys("create", "bad name", "--prefix", "up")
    assert code == 2 and "a key name is" in output
    code, output = keys("create", "ci", "--prefix", "up", "--expires", "soonish")
    assert code == 2
    code, output = keys("create", "ci", "--prefix", "up", "--prefix", "hub/library", "--expires", "30d")
    assert code == 0 and len(output.splitlines()[-1]) >= 32  # the secret, last
    assert keys("create", "ci", "--prefix", "up")[0] == 2  # names are unique
    code, output = keys("list", "--output", "json")
    [listed] = json.loads(output)
    assert listed["name"] == "ci" and listed["prefixes"] == ["up", "hub/library"] and "hash" not in str(listed)
    assert keys("revoke", "nobody")[0] != 0
    assert keys("revoke", "ci")[0] == 0


def test_a_rules_maximum_blob_size_is_a_setting_like_the_others(tmp_path: Path):
    data = ["--data-dir", str(tmp_path)]
    assert run("create", "hub", "--preset", "docker-hub", "--max-blob-bytes", "1048576", *data)[0] == 0
    code, output = run("describe", "hub", *data, "--output", "json")
    assert code == 0 and json.loads(output)[0]["max_blob_bytes"] == 1048576
    code, output = run("update", "hub", "--max-blob-bytes", "0", *data)
    assert code != 0 and "max_blob_bytes" in output


def test_token_mode_on_a_wildcard_address_needs_the_public_url(tmp_path: Path):
    """The token realm is never taken from a client's Host header, so it must be known."""
    for host in ("0.0.0.0", "::"):
        result = CliRunner().invoke(main, ["serve", "--host", host, "--auth", "token", "--data-dir", str(tmp_path)])
        assert result.exit_code == 2 and "--public-url" in result.output
    result = CliRunner().invoke(main, ["serve", "--public-url", "ftp://x", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "http(s)" in result.output
