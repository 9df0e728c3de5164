"""What an operator sees, after real pulls: /metrics (parsed by prometheus_client's own parser), `pullthrough stats`
and the status page in a real headless Chromium agree with each other and with the upstream's own access log."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from core.digest import Digest
from tests.e2e.conftest import AWS, PREFIX, cache_rules, lambda_server
from tests.support.clients import skopeo, skopeo_copy, verify_dir_digests
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry, summarize

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"  # Debian's package (make system-deps)
USAGE_FLUSHED_SECONDS = 6  # the server writes its usage totals every 5 s
SCREENSHOTS = os.environ.get("PULLTHROUGH_SCREENSHOTS")  # a directory: save the pages there (for the docs)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def samples(cache: PullthroughServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    exposition = httpx.get(f"{cache.url}/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}  # fmt: skip


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def pull(cache: PullthroughServer, image: TestImage, out: Path) -> None:
    skopeo_copy(image.ref(cache.host, PREFIX), out)
    assert verify_dir_digests(out) == image.blob_digests


def test_metrics_stats_and_the_status_page_agree_after_real_pulls(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images, browser: Browser
):
    image: TestImage = test_images["single-oci"]
    blobs = len(image.blob_digests)
    with PullthroughServer(tmp_path / "cache", cache_rules(upstream_registry), workers=2) as cache:
        mark = upstream_registry.mark()
        pull(cache, image, tmp_path / "cold")
        _, fetched_bytes = summarize([entry for entry in upstream_registry.requests_since(mark)
                                      if entry.method == "GET" and entry.status == 200])  # fmt: skip
        mark = upstream_registry.mark()
        pull(cache, image, tmp_path / "warm")
        assert upstream_registry.requests_since(mark) == []

        # /metrics: what both worker processes counted, by exactly what the two pulls did
        found = samples(cache)
        rule = {"rule": PREFIX}
        assert value(found, "pullthrough_cache_requests_total", **rule, kind="blob", result="miss") == blobs
        assert value(found, "pullthrough_cache_requests_total", **rule, kind="blob", result="hit") == blobs
        assert value(found, "pullthrough_cache_requests_total", **rule, kind="tag", result="miss") == 1
        assert value(found, "pullthrough_cache_requests_total", **rule, kind="tag", result="hit") == 1
        assert value(found, "pullthrough_image_pulls_total", **rule) == 2
        assert value(found, "pullthrough_upstream_bytes_total", **rule) == fetched_bytes
        manifest_bytes = fetched_bytes - image.blob_bytes
        assert value(found, "pullthrough_served_bytes_total", **rule) == image.blob_bytes + manifest_bytes
        upstream = f"http://{upstream_registry.host}"
        assert value(found, "pullthrough_upstream_requests_total", upstream=upstream, method="GET", status="200") \
            == 1 + blobs  # fmt: skip
        assert value(found, "pullthrough_content_bytes") == fetched_bytes
        assert value(found, "pullthrough_tags", **rule) == 1
        assert value(found, "pullthrough_upstream_left_alone", upstream=upstream) == 0
        assert value(found, "pullthrough_http_requests_total", route="/v2/{name:path}/blobs/{digest}", method="GET",
                     status="200") == 2 * blobs  # fmt: skip

        # `pullthrough stats`: the same, from the usage totals the workers wrote
        time.sleep(USAGE_FLUSHED_SECONDS)
        done = pullthrough_cli("stats", "--data-dir", cache.data_dir, "--rules", cache.workdir / "rules.json",
                               "--output", "json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        (up,) = [entry for entry in report["rules"] if entry["prefix"] == PREFIX]
        assert up["day"]["hits"] == 1 + blobs and up["day"]["upstream_answered"] == 1 + blobs
        assert up["day"]["upstream_bytes"] == fetched_bytes and up["day"]["served_bytes"] == fetched_bytes
        assert up["inventory"]["tags"] == 1 and up["inventory"]["repositories"] == 1
        assert up["most_pulled"] == [{"repository": f"{PREFIX}/{image.repository}", "pulls": 2}]
        assert up["health"]["state"] == "up"

        # the status page, in a real browser
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(cache.url + "/")
        assert page.locator("[data-metric=hits-day]").inner_text() == str(1 + blobs)
        assert page.locator("[data-metric=misses-day]").inner_text() == str(1 + blobs)
        assert page.locator("[data-metric=hit-ratio-day]").inner_text() == "50.0%"
        assert page.get_by_role("row", name=PREFIX).get_by_role("cell", name="up", exact=True).is_visible()  # health
        _screenshot(page, "status-overview.png")
        page.get_by_role("link", name="Repositories").click()
        page.get_by_role("link", name=f"{PREFIX}/{image.repository}").click()
        assert page.get_by_role("rowheader", name=image.tag).is_visible()
        page.get_by_title(image.digest).click()
        assert page.locator("[data-digest]").inner_text() == image.digest
        assert "linux/amd64" in page.inner_text("main")
        for blob in image.blob_digests:
            assert blob in page.inner_text("main")
        _screenshot(page, "status-image.png")
        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(cache.url + "/")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # readable on a phone: nothing wider than the screen
        missing = page.goto(f"{cache.url}/repositories/{PREFIX}/library/never-pulled")
        assert missing is not None and missing.status == 404


def test_in_token_mode_the_page_asks_for_a_key_and_shows_only_what_it_may_pull(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images, browser: Browser
):
    image: TestImage = test_images["single-oci"]
    rules = [*cache_rules(upstream_registry), {"prefix": "other", "upstream": upstream_registry.url}]
    with PullthroughServer(tmp_path / "cache", rules, extra_args=("--auth", "token")) as cache:
        key_args = ("--data-dir", str(cache.data_dir))
        made = pullthrough_cli("keys", "create", "everything", "--prefix", "", *key_args)
        limited = pullthrough_cli("keys", "create", "one", "--prefix", PREFIX, *key_args)
        assert made.returncode == 0 and limited.returncode == 0, made.stderr + limited.stderr
        everything, one = made.stdout.strip().splitlines()[-1], limited.stdout.strip().splitlines()[-1]
        for prefix in (PREFIX, "other"):  # the same image through two rules; the key "one" may pull only the first
            skopeo("copy", "--src-tls-verify=false", "--src-creds", f"everything:{everything}",
                   f"docker://{image.ref(cache.host, prefix)}", f"dir:{tmp_path / prefix}")  # fmt: skip

        anonymous = httpx.get(cache.url + "/repositories")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic ")
        assert httpx.get(cache.url + "/", auth=("one", "wrong")).status_code == 401
        context = browser.new_context(http_credentials={"username": "one", "password": one})
        page = context.new_page()
        page.goto(cache.url + "/repositories")
        listed = page.inner_text("main")
        assert f"{PREFIX}/{image.repository}" in listed and f"other/{image.repository}" not in listed
        page.goto(cache.url + "/")
        assert [cell.inner_text() for cell in page.locator("tbody th").all()] == [PREFIX]  # its rules only
        answer = page.goto(f"{cache.url}/repositories/other/{image.repository}")
        assert answer is not None and answer.status == 404
        assert httpx.get(cache.url + "/metrics").status_code == 200  # from loopback: the default in token mode


def test_a_refresh_run_beside_the_server_counts_on_its_metrics(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["single-oci"]
    with PullthroughServer(tmp_path / "cache", cache_rules(upstream_registry, ttl=1)) as cache:
        pull(cache, image, tmp_path / "pulled")
        time.sleep(1.5)  # past the tag's TTL: the refresh revalidates it
        done = pullthrough_cli("refresh", "--data-dir", cache.data_dir, "--rules", cache.workdir / "rules.json",
                               "--allow-private-upstreams")  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = samples(cache)
        assert value(found, "pullthrough_refresh_tags_total", rule=PREFIX, outcome="unchanged") == 1


def test_stats_of_a_deployment_read_its_table(tmp_path: Path, upstream_registry: DistributionRegistry, test_images,
                                              moto: MotoServer):  # fmt: skip
    image: TestImage = test_images["single-docker"]
    blobs = len(image.blob_digests)
    name = f"stats-{Digest.of(str(tmp_path).encode()).encoded[:12]}"
    with lambda_server(tmp_path / "lambda", moto, cache_rules(upstream_registry), 256 << 20, name) as cache:
        pull(cache, image, tmp_path / "cold")
        pull(cache, image, tmp_path / "warm")
    done = pullthrough_cli("stats", "--table", name, "--output", "json", env={"AWS_ENDPOINT_URL": moto.url, **AWS})
    assert done.returncode == 0, done.stderr
    (up,) = [entry for entry in json.loads(done.stdout)["rules"] if entry["prefix"] == PREFIX]
    assert up["day"]["hits"] == 1 + blobs and up["day"]["upstream_answered"] == 1 + blobs
    assert up["inventory"]["tags"] == 1 and up["inventory"]["blobs"] == blobs
    assert up["most_pulled"] == [{"repository": f"{PREFIX}/{image.repository}", "pulls": 2}]


def _screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)
