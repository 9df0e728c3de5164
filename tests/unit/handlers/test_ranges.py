from __future__ import annotations

import pytest

from handlers.http.ranges import parse_range


@pytest.mark.parametrize(
    "header, expected",
    [("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-10", (90, 99)), ("bytes=50-500", (50, 99)),
     ("bytes=-500", (0, 99)), ("bytes=100-", (100, 99)), ("bytes=500-0", (500, 0)), ("bytes=5-4", (5, 4)),
     ("BYTES = 1 - 2", (1, 2)), ("bytes=-", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("garbage", None)],
)  # fmt: skip
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected
