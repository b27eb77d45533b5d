"""What a site chooses to record and where it sends it: the ``[activity]`` and ``[collector]``
settings, as the agent uses them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


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


@dataclass(frozen=True)
class UploadSettings:
    """``[collector]``: where the agent ships its events, as which site, and how much at once."""

    url: str  # the collector's base URL; batches go to URL/api/v1/events
    site: str
    token_file: Path
    ca_file: Path | None = None  # None: the system's trusted certificates
    batch_events: int = 2_000
    batch_bytes: int = 4 * 1024 * 1024  # of NDJSON, before gzip
    spool_max_events: int = 5_000_000
    spool_max_days: float = 7.0
    timeout: float = 30.0
    # Take the groups, schedules and category actions from the collector, and ask for them
    # this often (an exception granted there reaches the agent within this time).
    policy: bool = True
    policy_interval: float = 60.0
    # Seconds between the agent's heartbeats (status events saying how it is): the collector
    # counts an agent silent for a few of these as not reporting.
    heartbeat_interval: float = 300.0
