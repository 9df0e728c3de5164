"""Powertools, configured once for every function (service name and namespace come from the environment)."""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
# Wire-level debug lines hold raw headers (an upstream's redirect Location, with its signature): never wanted.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Pullthrough"))


class PowertoolsMetrics:
    """The core's Metrics port, published as CloudWatch EMF by Powertools at the end of each invocation."""

    def count(self, name: str, value: float = 1.0) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
