"""HTTP Range requests (RFC 9110 §14) for blobs: one byte range, which is what registry clients send."""

from __future__ import annotations

import re

# ASCII digits only (str patterns' \d takes any Unicode digit), and no more than a 64-bit position needs.
_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*\Z", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, inclusive; None means "send the whole blob".

    A malformed header, a multi-range request or positions longer than 19 digits are ignored, as RFC 9110 allows.
    A start at or past the end, or an end before the start, is returned as is, for the caller to answer 416 (as the
    OCI conformance suite expects).
    """
    match = _SINGLE_RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0:
            return (size, size)
        return (max(size - suffix, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return (start, end)
    return (start, min(end, size - 1))
