"""Durations and sizes as people write them: `90d`, `12h`, `30s`; `50GiB`, `500MB`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])\Z")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"^([0-9]{1,15})\s*([KMGT]i?B|B)?\Z", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip


def parse_duration(text: str | int) -> int:
    """Seconds, from `90d`, `12h`, `30m`, `45s`, `2w`, or a number of seconds; ValueError otherwise."""
    if isinstance(text, int):
        return text
    match = _DURATION.match(text.strip())
    if match is None:
        if text.strip().isascii() and text.strip().isdigit():
            return int(text.strip())
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h, 30m or 45s")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_size(text: str) -> int:
    """Bytes, from `50GiB`, `500MB`, `1TiB` or a number of bytes; ValueError otherwise."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 50GiB or 500MB")
    return int(match.group(1)) * _BYTES[(match.group(2) or "b").lower()]
