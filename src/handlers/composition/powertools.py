"""Powertools, configured once for every function (service name, namespace and level come from the environment,
as Powertools reads them).

The Tracer is built only when tracing is switched on (POWERTOOLS_TRACE_DISABLED=false, the template's DetailedTracing
parameter): it imports the X-Ray SDK, a fifth of a cold start. Lambda's active tracing needs no SDK: every invocation
is traced by the service, with its init, invocation and overhead; the SDK adds subsegments for each AWS and upstream
call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from core import metrics as counts

logger = Logger()
# Wire-level debug lines hold raw headers (an upstream's redirect Location, with its signature): never wanted.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Powertools' own variable, with the template's value as the default: metrics need a namespace even when this module
# was imported before the variable was set (an emulator, a test).
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Pullthrough"))

Handler = Callable[[Any, Any], Any]


class PowertoolsMetrics:
    """The core's Metrics port, published as CloudWatch EMF by Powertools at the end of each invocation. No rule
    dimension: each combination of dimensions is a custom metric of its own, billed monthly; the hourly totals per
    rule are in the table (see core.usage)."""

    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None:
        unit = MetricUnit.Bytes if name in counts.BYTES else MetricUnit.Count
        metrics.add_metric(name=name, unit=unit, value=value)


def instrumented(handler: Handler, *, http: bool = False) -> Handler:
    """A function's handler with the Lambda context in its logs (and, behind API Gateway, the request id as the
    correlation id), traced, its metrics flushed at the end of each invocation."""
    correlation = correlation_paths.API_GATEWAY_HTTP if http else None
    wrapped = logger.inject_lambda_context(correlation_id_path=correlation)(handler)
    if _tracing_on():
        from aws_lambda_powertools import Tracer  # the X-Ray SDK: only when asked for

        wrapped = Tracer().capture_lambda_handler(wrapped)
    return metrics.log_metrics(wrapped)


def _tracing_on() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() not in ("1", "true")
