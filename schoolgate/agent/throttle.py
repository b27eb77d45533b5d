"""Logging that a flood cannot turn into a flood of log lines.

When the school's internet link is down every query fails the same way, and a broken client can
send malformed requests as fast as it likes: such failures are logged at most once per interval,
each time with the number of those not logged since.
"""

from __future__ import annotations

import time


class Throttle:
    """True at most once per ``every`` seconds; counts the times it said no since."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = -every
        self.skipped = 0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.every:
            self.skipped += 1
            return False
        self.last = now
        return True

    def take_skipped(self) -> int:
        """How many times it said no since it last said yes; starts counting again."""
        skipped, self.skipped = self.skipped, 0
        return skipped
