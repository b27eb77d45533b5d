"""What a site chooses to record: the ``[activity]`` settings, as the agent uses them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class QueryLogging(StrEnum):
    """Which queries the activity log keeps (alerts and the other kinds are always kept)."""

    ALL = "all"
    BLOCKED = "blocked"  # blocked, or raising an alert
    NONE = "none"


@dataclass(frozen=True)
class ActivitySettings:
    queries: QueryLogging = QueryLogging.ALL
    retention_days: int = 30
    pseudonymise: bool = False
    buffer_events: int = 50_000  # held in memory while the disk is slow, then dropped
    write_interval: float = 1.0  # seconds between writes, unless a batch fills or an alert
