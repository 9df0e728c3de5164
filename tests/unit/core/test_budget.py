"""The miss budget: a sliding window per client, shared through the store, with an honest Retry-After."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.budget import MissBudget, MissBudgetPolicy
from core.errors import TooManyRequests
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.conftest import Clock

LIMIT, WINDOW = 4, 60.0


@pytest.fixture
def budget(tmp_path: Path, clock: Clock) -> MissBudget:
    clock.now = 600 * WINDOW  # the start of a window
    return MissBudget(SqliteMetadataStore(tmp_path / "m.sqlite3", clock=clock), MissBudgetPolicy(LIMIT, WINDOW), clock)


def charge_times(budget: MissBudget, times: int, client: str = "ci") -> None:
    for _ in range(times):
        budget.charge(client)


def test_a_client_gets_its_limit_and_then_429_with_the_wait(budget, clock):
    clock.advance(15)
    charge_times(budget, LIMIT)
    with pytest.raises(TooManyRequests) as refused:
        budget.charge("ci")
    # Five counted (the refused one too): the next window starts over, and they weigh too much until 2/5 of it is gone.
    assert refused.value.retry_after == 45 + 24
    charge_times(budget, 1, client="another")  # budgets are per client


def test_a_burst_across_a_window_boundary_is_not_allowed_twice(budget, clock):
    clock.advance(WINDOW - 1)
    charge_times(budget, LIMIT)
    clock.advance(2)  # one second into the next window: the four still weigh almost fully
    with pytest.raises(TooManyRequests) as refused:
        budget.charge("ci")
    # With two of this window's (the refused one counts), the four must weigh at most two: half a window on.
    assert refused.value.retry_after == 29


def test_the_older_windows_count_fades_as_the_window_slides(budget, clock):
    charge_times(budget, LIMIT)
    clock.advance(WINDOW * 1.5)  # the four weigh half now
    charge_times(budget, 2)
    with pytest.raises(TooManyRequests):
        budget.charge("ci")
    clock.advance(2 * WINDOW)  # both windows are forgotten
    charge_times(budget, LIMIT)


def test_a_limit_of_zero_turns_the_budget_off(tmp_path, clock):
    off = MissBudget(SqliteMetadataStore(tmp_path / "m.sqlite3", clock=clock), MissBudgetPolicy(0), clock)
    charge_times(off, 100)
