"""Events on the local server (syncs, lifecycle deletions): one JSON log line each, the same fields as on AWS."""

from __future__ import annotations

import json
import logging

from core.ports import Event

log = logging.getLogger("pullthrough.events")


class LogEvents:
    def publish(self, event: Event) -> None:
        log.info("%s %s", event.DETAIL_TYPE, json.dumps(event.detail(), sort_keys=True))
