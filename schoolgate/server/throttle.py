"""Failures counted per key in a sliding window, in bounded memory.

Sign-in counts its failures per user name and per client address: past the limit, further
tries are refused without checking the password, until the oldest failure in the window ages
out. A key keeps at most ``limit`` times and the table at most ``max_keys`` keys (the least
recently failed go first), so a flood of made-up names cannot grow it without end.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class FailureWindow:
    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or None when it may now."""
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + self.window - now

    def failed(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
