"""The configuration of what the agent records and reports: ``[activity]``, ``[alerts]``,
``[metrics]`` and ``[monitor]``. Read as part of the one configuration file (``config.py``),
checked here."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

import msgspec

from schoolgate.agent.activity.alerts import AlertSettings
from schoolgate.agent.activity.settings import ActivitySettings, QueryLogging
from schoolgate.agent.monitor.settings import MonitorSettings

Fail = Callable[[str, Any, str], Exception]

MAX_RETENTION_DAYS: Final = 3_650
MIN_BUFFER_EVENTS: Final = 1_000
MAX_BUFFER_EVENTS: Final = 10_000_000


class ActivitySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    queries: Literal["all", "blocked", "none"] = "all"
    retention_days: int = 30
    pseudonymise: bool = False
    buffer_events: int = 50_000
    write_interval: float = 1.0


class AlertsSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    repeated_blocks: int = 20
    repeated_minutes: float = 5.0
    quiet_minutes: float = 10.0


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listen: str = ""


class MonitorSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    interfaces: list[str] = msgspec.field(default_factory=list)
    approved_macs: list[str] = msgspec.field(default_factory=list)
    bandwidth_interval: int = 60
    top_talkers: int = 10
    device_bytes: bool = True


def activity_settings(fail: Fail, section: ActivitySection) -> ActivitySettings:
    if not 1 <= section.retention_days <= MAX_RETENTION_DAYS:
        raise fail(
            "activity.retention_days",
            section.retention_days,
            f"between 1 and {MAX_RETENTION_DAYS} days",
        )
    if not MIN_BUFFER_EVENTS <= section.buffer_events <= MAX_BUFFER_EVENTS:
        raise fail(
            "activity.buffer_events",
            section.buffer_events,
            f"between {MIN_BUFFER_EVENTS:,} and {MAX_BUFFER_EVENTS:,} events",
        )
    if not 0.05 <= section.write_interval <= 60:
        raise fail("activity.write_interval", section.write_interval, "between 0.05 and 60 s")
    return ActivitySettings(
        queries=QueryLogging(section.queries),
        retention_days=section.retention_days,
        pseudonymise=section.pseudonymise,
        buffer_events=section.buffer_events,
        write_interval=section.write_interval,
    )


def alert_settings(fail: Fail, section: AlertsSection) -> AlertSettings:
    if not 0 <= section.repeated_blocks <= 10_000:
        raise fail(
            "alerts.repeated_blocks",
            section.repeated_blocks,
            "between 0 (no repeated-attempts alerts) and 10000",
        )
    for key in ("repeated_minutes", "quiet_minutes"):
        value = getattr(section, key)
        if not 0 <= value <= 1_440 or math.isnan(value):
            raise fail(f"alerts.{key}", value, "between 0 and 1440 minutes")
    if section.repeated_blocks and not section.repeated_minutes > 0:
        raise fail(
            "alerts.repeated_minutes",
            section.repeated_minutes,
            "must be more than 0 while alerts.repeated_blocks is set",
        )
    return AlertSettings(
        repeated_blocks=section.repeated_blocks,
        repeated_minutes=section.repeated_minutes,
        quiet_minutes=section.quiet_minutes,
    )


def metrics_listen(
    fail: Fail, section: MetricsSection, parse_address: Callable[[str], tuple[str, int]]
) -> tuple[str, int] | None:
    if not section.listen:
        return None
    try:
        return parse_address(section.listen)
    except ValueError as exc:
        raise fail("metrics.listen", section.listen, str(exc)) from None


_INTERFACE: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def monitor_settings(
    fail: Fail,
    section: MonitorSection,
    normalize_mac: Callable[[str], str | None],
    group_macs: Iterable[str],
) -> MonitorSettings:
    for i, name in enumerate(section.interfaces):
        if not _INTERFACE.fullmatch(name):
            raise fail(f"monitor.interfaces[{i}]", name, "not an interface name")
    approved = set(group_macs)
    for i, text in enumerate(section.approved_macs):
        mac = normalize_mac(text)
        if mac is None:
            raise fail(f"monitor.approved_macs[{i}]", text, "not a MAC address")
        approved.add(mac)
    if section.bandwidth_interval and not 10 <= section.bandwidth_interval <= 86_400:
        raise fail(
            "monitor.bandwidth_interval",
            section.bandwidth_interval,
            "0 (no bandwidth events) or between 10 and 86400 s",
        )
    if not 0 <= section.top_talkers <= 1_000:
        raise fail("monitor.top_talkers", section.top_talkers, "between 0 and 1000")
    return MonitorSettings(
        enabled=section.enabled,
        interfaces=tuple(section.interfaces),
        approved_macs=frozenset(approved),
        bandwidth_interval=section.bandwidth_interval,
        top_talkers=section.top_talkers,
        device_bytes=section.device_bytes,
    )
