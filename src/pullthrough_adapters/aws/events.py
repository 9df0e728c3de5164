"""Events on AWS (syncs, lifecycle deletions): EventBridge, on the default bus, in ECR's shapes so ECR rules carry
over."""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from core.ports import Event

log = logging.getLogger(__name__)
SOURCE = "pullthrough"


class EventBridgeEvents:
    def __init__(self, client: Any, bus: str = "default") -> None:
        self._client = client
        self._bus = bus

    def publish(self, event: Event) -> None:
        entry = {"Source": SOURCE, "DetailType": event.DETAIL_TYPE, "Detail": json.dumps(event.detail()),
                 "EventBusName": self._bus}  # fmt: skip
        try:
            failed = self._client.put_events(Entries=[entry]).get("FailedEntryCount", 0)
        except ClientError:
            failed = 1
        if failed:  # events are best effort, as ECR's are: a lost event must not fail the refresh
            log.warning("could not publish %s for %s", event.DETAIL_TYPE, event.repository_name)
