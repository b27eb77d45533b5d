"""The configuration of what the agent records and reports: ``[activity]``, ``[alerts]``,
``[collector]``, ``[metrics]`` and ``[monitor]``. Read as part of the one configuration file
(``config.py``), checked here."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import msgspec

from schoolgate.agent.activity.alerts import AlertSettings
from schoolgate.agent.activity.settings import ActivitySettings, QueryLogging, UploadSettings
from schoolgate.agent.loopback import is_loopback
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


class CollectorSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = ""
    site: str = ""
    token_file: str = ""
    ca_file: str = ""
    # The defaults are the settings' own.
    batch_events: int = UploadSettings.batch_events
    batch_bytes: int = UploadSettings.batch_bytes
    spool_max_events: int = UploadSettings.spool_max_events
    spool_max_days: float = UploadSettings.spool_max_days
    timeout: float = UploadSettings.timeout
    policy: bool = UploadSettings.policy
    policy_interval: float = UploadSettings.policy_interval
    heartbeat_interval: float = UploadSettings.heartbeat_interval


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


_SITE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def upload_settings(
    fail: Fail, section: CollectorSection, resolve: Callable[[str], Path]
) -> UploadSettings | None:
    """``[collector]`` checked; None when no collector is configured."""
    if not section.url:
        for key in ("site", "token_file", "ca_file"):
            if getattr(section, key):
                raise fail(f"collector.{key}", getattr(section, key), "set collector.url too")
        return None
    url = urlsplit(section.url)
    if url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
        raise fail("collector.url", section.url, "expected https://HOST[:PORT][/PATH]")
    if url.scheme == "http" and not is_loopback(url.hostname):
        raise fail(
            "collector.url",
            section.url,
            "events name pupils' devices: use https:// (plain http only to this machine)",
        )
    if not _SITE.match(section.site):
        raise fail(
            "collector.site",
            section.site,
            "the site's name as registered on the collector: 1-64 lowercase letters, digits,"
            " dots, dashes or underscores",
        )
    if not section.token_file:
        raise fail("collector.token_file", section.token_file, "the file with the site's token")
    token_file = resolve(section.token_file)
    if not os.access(token_file, os.R_OK):
        raise fail("collector.token_file", section.token_file, "cannot be read")
    ca_file = resolve(section.ca_file) if section.ca_file else None
    if ca_file is not None and not os.access(ca_file, os.R_OK):
        raise fail("collector.ca_file", section.ca_file, "cannot be read")
    for key, low, high in (
        ("batch_events", 1, 50_000),
        ("batch_bytes", 4096, 64 * 1024 * 1024),
        ("spool_max_events", 1_000, 1_000_000_000),
        ("spool_max_days", 0.01, 3_650),
        ("timeout", 1, 600),
        ("policy_interval", 10, 3_600),
        ("heartbeat_interval", 1, 3_600),
    ):
        value = getattr(section, key)
        if not low <= value <= high or (isinstance(value, float) and not math.isfinite(value)):
            raise fail(f"collector.{key}", value, f"must be from {low:g} to {high:g}")
    return UploadSettings(
        url=section.url.rstrip("/"),
        site=section.site,
        token_file=token_file,
        ca_file=ca_file,
        batch_events=section.batch_events,
        batch_bytes=section.batch_bytes,
        spool_max_events=section.spool_max_events,
        spool_max_days=section.spool_max_days,
        timeout=section.timeout,
        policy=section.policy,
        policy_interval=section.policy_interval,
        heartbeat_interval=section.heartbeat_interval,
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
