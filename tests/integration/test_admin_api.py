"""The rules admin API (on AWS behind IAM-authorized routes), over the local store."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from handlers.http.admin import create_admin_app
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.validation import validate_rule_now
from tests.support.ports import free_port


@pytest.fixture
def admin(tmp_path: Path) -> TestClient:
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    addresses = AddressPolicy(allow_private=True)
    return TestClient(create_admin_app(store, lambda rule, image: validate_rule_now(rule, addresses, image).to_dict()))


def test_create_read_update_delete(admin: TestClient):
    secret = "arn:aws:secretsmanager:us-east-1:111122223333:secret:ecr-pullthroughcache/hub"
    body = {"upstream": "https://registry-1.docker.io", "library_namespace": True, "credentials": secret}
    created = admin.put("/admin/rules/team/hub", json=body)
    assert created.status_code == 201 and created.json()["prefix"] == "team/hub"
    updated = admin.put(
        "/admin/rules/team/hub", json={"upstream": "https://registry-1.docker.io", "tag_ttl_seconds": 60}
    )
    assert updated.status_code == 200 and updated.json() == {
        "prefix": "team/hub", "upstream": "https://registry-1.docker.io", "tag_ttl_seconds": 60}  # fmt: skip
    assert admin.put("/admin/rules/_root", json={"upstream": "https://mirror.example"}).status_code == 201
    assert [rule["prefix"] for rule in admin.get("/admin/rules").json()] == ["", "team/hub"]
    assert admin.get("/admin/rules/_root").json() == {"prefix": "", "upstream": "https://mirror.example"}
    assert admin.delete("/admin/rules/team/hub").status_code == 204
    missing = admin.get("/admin/rules/team/hub")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert admin.delete("/admin/rules/team/hub").status_code == 404


def test_invalid_rules_are_refused_with_the_reason(admin: TestClient):
    for body in ({"upstream": "file:///etc/passwd"}, {"upstream": "https://x.example", "password": "p"},
                 {"upstream": "https://x.example", "tag_ttl_seconds": -1}):  # fmt: skip
        answer = admin.put("/admin/rules/x", json=body)
        assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "RULE_INVALID", body
    assert admin.get("/admin/rules").json() == []


def test_validate_reports_an_unreachable_upstream(admin: TestClient):
    admin.put("/admin/rules/gone", json={"upstream": f"http://127.0.0.1:{free_port()}"})
    report = admin.post("/admin/validate/gone").json()
    assert report["valid"] is False and report["reachable"] is False and "unreachable" in report["failure"]


def test_lifecycle_settings_through_the_admin_api(admin: TestClient):
    body = {"upstream": "https://ghcr.io", "expire_unpulled": "90d", "keep": ["org/base", "re:org/app:v1\\..*"]}
    created = admin.put("/admin/rules/ghcr", json=body)
    assert created.status_code == 201
    assert admin.get("/admin/rules/ghcr").json() == {"prefix": "ghcr", "upstream": "https://ghcr.io",
                                                     "expire_unpulled": "90d", "keep": body["keep"]}  # fmt: skip
    for wrong in ({"expire_unpulled": "soon"}, {"expire_unpulled": "0s"}, {"keep": ["re:("]}):
        answer = admin.put("/admin/rules/ghcr", json={"upstream": "https://ghcr.io", **wrong})
        assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "RULE_INVALID", wrong
