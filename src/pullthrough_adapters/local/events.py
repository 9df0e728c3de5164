"""Sync events on the local server: one JSON log line each, with the same fields as on AWS."""

from __future__ import annotations

import json
import logging

from core.ports import SyncEvent

log = logging.getLogger("pullthrough.events")


class LogEvents:
    def publish(self, event: SyncEvent) -> None:
        log.info("%s %s", event.DETAIL_TYPE, json.dumps(event.detail(), sort_keys=True))
