from core.expiring import Expiring


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_stands_for_its_age_then_is_forgotten():
    clock = Clock()
    memo: Expiring[str, int] = Expiring(10, 60.0, clock)
    memo.put("a", 1)
    clock.now = 59.9
    assert memo.get("a") == 1
    clock.now = 60.0
    assert memo.get("a") is None


def test_the_least_recently_used_go_first_when_full():
    memo: Expiring[str, int] = Expiring(2, 60.0, Clock())
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # used: b is now the oldest
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (1, None, 3)


def test_a_change_keeps_the_values_age_and_none_is_kept_at_size_zero():
    clock = Clock()
    memo: Expiring[str, int] = Expiring(10, 60.0, clock)
    memo.put("a", 1)
    clock.now = 50.0
    memo.change("a", lambda value: value + 1)
    memo.change("missing", lambda value: value + 1)
    assert memo.get("a") == 2 and memo.get("missing") is None
    clock.now = 60.0
    assert memo.get("a") is None
    nothing: Expiring[str, int] = Expiring(0, 60.0, clock)
    nothing.put("a", 1)
    assert nothing.get("a") is None
