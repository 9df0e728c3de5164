"""`pullthrough serve`'s Prometheus metrics, with the official client library.

Every server worker process (and a `pullthrough refresh` run beside it) writes its counters to files in one directory
(the library's multiprocess mode, PROMETHEUS_MULTIPROC_DIR, set by `serve` before any of them starts), and /metrics
adds them up, so `--workers N` reports one truth. What is read at scrape time (content, upstream state, fills in
flight) comes from the metadata store, which all processes share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import metrics as counts
from core.ports import BreakerState

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # the library's own variable
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CACHE_OUTCOMES = {
    counts.TAG_HIT: ("tag", "hit"), counts.TAG_REVALIDATED: ("tag", "revalidated"), counts.TAG_MISS: ("tag", "miss"),
    counts.STALE_SERVED: ("tag", "stale"), counts.MANIFEST_HIT: ("manifest", "hit"),
    counts.MANIFEST_MISS: ("manifest", "miss"), counts.BLOB_HIT: ("blob", "hit"), counts.BLOB_MISS: ("blob", "miss"),
}  # fmt: skip
_REFRESH_OUTCOMES = {
    counts.REFRESH_UNCHANGED: "unchanged", counts.REFRESH_UPDATED: "updated", counts.REFRESH_DEFERRED: "deferred",
    counts.REFRESH_FAILED: "failed",
}  # fmt: skip
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PrometheusMetrics:
    """The core's Metrics port, the HTTP layer's request observer and the upstream client's response hook, as
    Prometheus counters and histograms."""

    def __init__(self) -> None:
        # The library chooses in-process or per-process-file values when it is imported; `serve` names the files'
        # directory later than that, so choose again now.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self._requests = Counter("pullthrough_cache_requests", "Client requests for tags, manifests and blobs, by "
                                 "what answered them", ["rule", "kind", "result"], registry=r)  # fmt: skip
        self._pulls = Counter("pullthrough_image_pulls", "Manifest GETs by tag", ["rule"], registry=r)
        self._upstream_bytes = Counter("pullthrough_upstream_bytes", "Manifest and blob bytes fetched from upstreams",
                                       ["rule"], registry=r)  # fmt: skip
        self._served_bytes = Counter("pullthrough_served_bytes", "Bytes answered from the cache (a range counts "
                                     "its whole blob)", ["rule"], registry=r)  # fmt: skip
        self._failures = Counter("pullthrough_upstream_failures", "Failures of a whole upstream (refused, timed out, "
                                 "429, 5xx)", ["rule"], registry=r)  # fmt: skip
        self._opened = Counter("pullthrough_upstream_breaker_opened", "Times an upstream was left alone after "
                               "failures in a row", ["rule"], registry=r)  # fmt: skip
        self._refresh = Counter("pullthrough_refresh_tags", "Tags a refresh run revalidated, by outcome",
                                ["rule", "outcome"], registry=r)  # fmt: skip
        self._expired = Counter("pullthrough_lifecycle_expired_images", "Images the lifecycle forgot", registry=r)
        self._reclaimed = Counter("pullthrough_lifecycle_reclaimed_bytes", "Bytes the lifecycle deleted", registry=r)
        self._http = Counter("pullthrough_http_requests", "HTTP requests answered, by route, method and status",
                             ["route", "method", "status"], registry=r)  # fmt: skip
        self._latency = Histogram("pullthrough_http_request_duration_seconds", "Time to the answer's headers",
                                  ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self._upstream = Counter("pullthrough_upstream_requests", "Requests to upstreams (and their token services "
                                 "and redirects), by host, method and status", ["upstream", "method", "status"],
                                 registry=r)  # fmt: skip

    def _labelled(self, metric: Counter | Histogram, *labels: str) -> Any:
        """metric.labels(*labels), kept: a request counts four or five times, and labels() takes a lock and builds a
        key each time."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- the core's Metrics port ----------------------------------------------------------------------------------

    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None:
        if name in _CACHE_OUTCOMES:
            self._labelled(self._requests, rule, *_CACHE_OUTCOMES[name]).inc(value)
        elif name in _REFRESH_OUTCOMES:
            self._labelled(self._refresh, rule, _REFRESH_OUTCOMES[name]).inc(value)
        elif name == counts.IMAGE_PULL:
            self._labelled(self._pulls, rule).inc(value)
        elif name == counts.UPSTREAM_BYTES:
            self._labelled(self._upstream_bytes, rule).inc(value)
        elif name == counts.SERVED_BYTES:
            self._labelled(self._served_bytes, rule).inc(value)
        elif name == counts.UPSTREAM_FAILURE:
            self._labelled(self._failures, rule).inc(value)
        elif name == counts.UPSTREAM_BREAKER_OPENED:
            self._labelled(self._opened, rule).inc(value)
        elif name == counts.LIFECYCLE_EXPIRED_IMAGES:
            self._expired.inc(value)
        elif name == counts.LIFECYCLE_RECLAIMED_BYTES:
            self._reclaimed.inc(value)

    # -- hooks ----------------------------------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._labelled(self._http, route, method, str(status)).inc()
        self._labelled(self._latency, route, method).observe(seconds)

    def observe_upstream(self, response: httpx.Response) -> None:
        """An httpx response hook: every answer from an upstream, its token service or where it redirected."""
        upstream = f"{response.url.scheme}://{response.url.netloc.decode()}"
        self._labelled(self._upstream, upstream, response.request.method, str(response.status_code)).inc()

    def exposition(self, *collectors: Collector) -> bytes:
        """The text format: every process's counters (in multiprocess mode) and what `collectors` read now."""
        directory = os.environ.get(MULTIPROCESS_DIRECTORY)
        registry = CollectorRegistry()
        if directory:
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        else:
            registry.register(_Everything(self.registry))
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry)


class _Everything:
    """One registry's metrics, as a collector of another."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class StateCollector:
    """What the metadata store and the blob store say now, read at most every `max_age` seconds (a walk of the
    records costs more than a scrape should)."""

    def __init__(
        self,
        content: Callable[[], dict[str, tuple[int, int, int]]],  # rule -> (repositories, tags, bytes stored)
        stored_bytes: Callable[[], int],
        fills_in_flight: Callable[[], int],
        upstreams: Callable[[], dict[str, BreakerState | None]],
        max_age: float = 30.0,
    ) -> None:
        self._content = content
        self._stored_bytes = stored_bytes
        self._fills = fills_in_flight
        self._upstreams = upstreams
        self._max_age = max_age
        self._read_at = 0.0
        self._last: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        if time.monotonic() - self._read_at > self._max_age:
            self._last, self._read_at = self._read(), time.monotonic()
        yield from self._last
        fills = GaugeMetricFamily("pullthrough_fills_in_flight", "Blob downloads under way, in every process")
        fills.add_metric([], self._fills())
        yield fills

    def _read(self) -> list[Metric]:
        repositories = GaugeMetricFamily("pullthrough_repositories", "Repositories with records", labels=["rule"])
        tags = GaugeMetricFamily("pullthrough_tags", "Tags recorded", labels=["rule"])
        by_rule = GaugeMetricFamily("pullthrough_rule_bytes", "Bytes a rule's records refer to (shared content "
                                    "counted once per repository)", labels=["rule"])  # fmt: skip
        for rule, (repository_count, tag_count, stored) in self._content().items():
            repositories.add_metric([rule], repository_count)
            tags.add_metric([rule], tag_count)
            by_rule.add_metric([rule], stored)
        stored_bytes = GaugeMetricFamily("pullthrough_content_bytes", "Bytes of manifests and blobs stored")
        stored_bytes.add_metric([], self._stored_bytes())
        left_alone = GaugeMetricFamily("pullthrough_upstream_left_alone", "1 while an upstream's breaker is open "
                                       "(nobody asks it)", labels=["upstream"])  # fmt: skip
        failures = GaugeMetricFamily("pullthrough_upstream_failures_in_a_row", "Failures counted towards opening "
                                     "the breaker", labels=["upstream"])  # fmt: skip
        now = time.time()
        for upstream, state in self._upstreams().items():
            left_alone.add_metric([upstream], 1 if state is not None and state.open_until > now else 0)
            failures.add_metric([upstream], state.failures if state is not None else 0)
        return [repositories, tags, by_rule, stored_bytes, left_alone, failures]
