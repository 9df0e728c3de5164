"""Paging of name lists (tags, repositories) the way the distribution spec pages them: sorted, after `last`, at most
`n`; `n` = 0 is an empty page with nothing after it."""

from __future__ import annotations

from collections.abc import Iterable

from core.errors import PaginationNumberInvalid


def page(items: Iterable[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """(the page, whether more items follow it)."""
    if n is not None and n < 0:
        raise PaginationNumberInvalid(f"n must be a non-negative integer, got {n}")
    remaining = sorted(item for item in items if last is None or item > last)
    if n is None or len(remaining) <= n:
        return remaining, False
    return remaining[:n], n > 0
