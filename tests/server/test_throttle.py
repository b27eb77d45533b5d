"""Failures counted in a sliding window, in bounded memory."""

from __future__ import annotations

from schoolgate.server.throttle import FailureWindow


def test_the_limit_refuses_until_the_oldest_failure_ages_out() -> None:
    window = FailureWindow(limit=3, window=900)
    for t in (0.0, 10.0, 20.0):
        assert window.retry_after("lead", t) is None
        window.failed("lead", t)
    assert window.retry_after("lead", 30.0) == 870.0
    assert window.retry_after("someone-else", 30.0) is None
    assert window.retry_after("lead", 900.0) is None  # the first has aged out
    window.failed("lead", 900.0)
    assert window.retry_after("lead", 901.0) == 9.0


def test_clearing_a_key_forgets_its_failures() -> None:
    window = FailureWindow(limit=2, window=60)
    window.failed("lead", 0.0)
    window.failed("lead", 1.0)
    assert window.retry_after("lead", 2.0) is not None
    window.clear("lead")
    assert window.retry_after("lead", 2.0) is None


def test_memory_is_bounded() -> None:
    window = FailureWindow(limit=5, window=60, max_keys=100)
    for n in range(10_000):
        window.failed(f"name-{n}", 1.0)
        window.failed("persistent", 1.0)
    assert len(window) == 100
    # The key failing all along was never the least recent, so it was kept.
    assert window.retry_after("persistent", 2.0) is not None
    # Expired keys go when looked at.
    assert window.retry_after("name-9999", 100.0) is None
    assert len(window) == 99
