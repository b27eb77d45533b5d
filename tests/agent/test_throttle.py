from __future__ import annotations

from schoolgate.agent.throttle import Throttle


def test_says_yes_once_per_interval_and_counts_the_noes() -> None:
    throttle = Throttle(every=3600)
    assert throttle()
    assert not throttle() and not throttle()
    assert throttle.take_skipped() == 2
    assert throttle.take_skipped() == 0


def test_says_yes_again_once_the_interval_is_over() -> None:
    throttle = Throttle(every=0)
    assert throttle() and throttle()
    assert throttle.take_skipped() == 0
