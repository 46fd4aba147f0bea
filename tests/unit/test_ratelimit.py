"""The registration rate limit: per user, for everyone, and that it forgets."""

from component.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_gets_per_user_attempts_a_window_then_waits():
    clock = Clock()
    limit = RateLimit(per_user=2, total=100, window=60, clock=clock)
    assert [limit.wait_time("a"), limit.wait_time("a")] == [0, 0]
    clock.now += 10
    assert limit.wait_time("a") == 50  # the first attempt leaves the window in 50 s
    assert limit.wait_time("b") == 0  # others are not held by it
    clock.now += 50
    assert limit.wait_time("a") == 0


def test_the_total_bounds_many_users_together():
    clock = Clock()
    limit = RateLimit(per_user=5, total=3, window=60, clock=clock)
    assert [limit.wait_time(user) for user in "abc"] == [0, 0, 0]
    assert limit.wait_time("d") == 60
    clock.now += 60
    assert limit.wait_time("d") == 0


def test_users_who_stopped_trying_are_forgotten():
    """A gateway that registered thousands of users keeps none of their attempts."""
    clock = Clock()
    limit = RateLimit(per_user=5, total=10_000, window=60, clock=clock)
    for n in range(1000):
        assert limit.wait_time(f"user{n}") == 0
    clock.now += 61
    assert limit.wait_time("late") == 0
    assert list(limit._users) == ["late"]
