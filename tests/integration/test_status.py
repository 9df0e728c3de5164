"""The status pages and /metrics through the real app (local storage, a fake upstream): who may read /metrics, what
the pages answer for what is not there, and that the registry's own errors stay OCI JSON beside them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.cache import PullThroughCache
from core.digest import Digest
from core.ports import AllMetrics
from core.usage import UsageMeter
from handlers.http.observed import ObservedRequests
from handlers.http.registry import create_app
from handlers.http.status import StatusSources, status_error, status_router
from pullthrough_adapters.local.prometheus import PrometheusMetrics, StateCollector
from tests.fakes import FakeUpstream

LAYER = b"layer " * 1000


def client_for(cache: PullThroughCache, access: str) -> tuple[TestClient, PrometheusMetrics, UsageMeter]:
    metadata, blobs = cache._metadata, cache._blobs
    prometheus, usage = PrometheusMetrics(), UsageMeter(metadata)
    cache._metrics = AllMetrics(prometheus, usage)
    sources = StatusSources(cache.rule_source, metadata, metadata, metadata, blobs, lambda: 0)
    state = StateCollector(lambda: {}, lambda: 0, lambda: metadata.live_leases("fill/"), lambda: {})
    pages = status_router(sources, None, lambda: prometheus.exposition(state), access)  # type: ignore[arg-type]
    app = create_app(cache, pages=pages, page_error=status_error)
    app.add_middleware(ObservedRequests, observe=prometheus.observe_request)
    return TestClient(app, raise_server_exceptions=False), prometheus, usage


@pytest.fixture
def image(upstream: FakeUpstream) -> str:
    return str(upstream.add_image("library/app", "v1", layer=LAYER))


@pytest.mark.parametrize(("access", "status"), [("loopback", 403), ("everyone", 200), ("off", 403)])
def test_who_may_read_the_metrics(cache, access, status):
    client, _, _ = client_for(cache, access)  # the test client's address is "testclient": not loopback
    assert client.get("/metrics").status_code == status


def test_the_metrics_count_a_pull_and_the_usage_totals_hold_it(cache, image):
    client, _, usage = client_for(cache, "everyone")
    assert client.get("/v2/up/library/app/manifests/v1").status_code == 200
    assert client.get(f"/v2/up/library/app/blobs/{Digest.of(LAYER)}").content == LAYER
    assert client.get(f"/v2/up/library/app/blobs/{Digest.of(LAYER)}").content == LAYER
    found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
             for family in text_string_to_metric_families(client.get("/metrics").text)
             for sample in family.samples}  # fmt: skip
    for result in ("hit", "miss"):
        labels = (("kind", "blob"), ("result", result), ("rule", "up"))
        assert found["pullthrough_cache_requests_total", labels] == 1
    assert found["pullthrough_served_bytes_total", (("rule", "up"),)] == len(LAYER)
    usage.flush()
    hits = [value for key, value in cache._metadata.usage(0) if key.name == "BlobHit"]
    assert hits == [1]


def test_pages_answer_what_is_not_there_with_pages_and_the_registry_with_oci_errors(cache, image):
    client, _, _ = client_for(cache, "everyone")
    assert client.get("/").status_code == 200
    missing = client.get("/repositories/up/library/never")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    unknown_digest = client.get(f"/images/up/library/app/{Digest.of(b'nothing')}")
    assert unknown_digest.status_code == 404
    registry = client.get("/v2/up/library/never/manifests/v1")
    assert registry.status_code == 404 and registry.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    client.get("/v2/up/library/app/manifests/v1")
    page = client.get("/repositories/up/library/app")
    assert page.status_code == 200 and image in page.text
    assert client.get(f"/images/up/library/app/{image}").status_code == 200


def test_an_image_page_shows_its_referrers_by_type(cache, image, upstream: FakeUpstream):
    client, _, _ = client_for(cache, "everyone")
    client.get("/v2/up/library/app/manifests/v1")
    assert "none cached" in client.get(f"/images/up/library/app/{image}").text
    for kind in ("application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json", "application/spdx+json"):
        upstream.add_referrer("library/app", Digest.parse(image), kind, kind.encode() + b"%d" % len(upstream.blobs))
    assert client.get(f"/v2/up/library/app/referrers/{image}").status_code == 200
    page = client.get(f"/images/up/library/app/{image}").text
    assert "<code>application/spdx+json</code>: 2" in page
    assert "<code>application/vnd.dev.cosign.artifact.sig.v1+json</code>: 1" in page
