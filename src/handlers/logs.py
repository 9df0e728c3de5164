"""Logging for the local commands: one format, and no secret in any line, whoever logs it."""

from __future__ import annotations

import logging
import re

# Query parameters that carry credentials: presigned URLs (S3's X-Amz-*, CDNs' Signature/sig), tokens.
_SECRET_PARAMETER = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|token|access_token)=[^&\s'\"<>]+"
)
# Wire-level loggers: their debug lines hold raw headers (an upstream's redirect Location with its signature).
_QUIET_LOGGERS = ("httpx", "httpcore", "hpack")


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAMETER.sub(r"\1=REDACTED", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Idempotent: server worker processes call it again as they start."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level.upper(), format=format)
    root.setLevel(level.upper())
    for handler in root.handlers:
        if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
            handler.addFilter(RedactSecrets())
    for name in _QUIET_LOGGERS:  # one line per upstream request is the access log's job
        logging.getLogger(name).setLevel(logging.WARNING)
