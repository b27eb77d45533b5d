"""The event model: one record per thing that happened, whatever its kind.

The kinds are those of the design: ``dns`` (a query and what the filter did), ``alert`` (a
safeguarding alert or repeated attempts), ``device`` (a new or unapproved device), ``bypass``
(a lookup of, or traffic to, a way around the filter), ``bandwidth`` (interface and top-talker
figures) and ``status`` (the agent about itself: heartbeats, the policy test of what it
serves, events it gave up on; see ``status_events``). Each carries the time in UTC and the
device as the agent knew it then; a ``dns`` event fills the query fields, the others put what
is particular to them in ``data``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class EventKind(StrEnum):
    DNS = "dns"
    ALERT = "alert"
    DEVICE = "device"
    BYPASS = "bypass"
    BANDWIDTH = "bandwidth"
    STATUS = "status"


class Severity(StrEnum):
    """How urgent an alert is; from the category's tier for a category alert."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event. Empty strings and ``None`` mean "not known" or "not this kind's"."""

    kind: EventKind
    time: float  # seconds since the epoch, UTC
    client_ip: str = ""
    mac: str = ""
    hostname: str = ""
    group: str = ""
    name: str = ""  # the name asked for (dns, alert), or the target (bypass); lowercase
    qtype: str = ""  # "A", "AAAA", "HTTPS", ... or the number for a type without a name
    action: str = ""  # what the filter did: allow, block, alert, block+alert, rewrite
    categories: tuple[str, ...] = ()  # the category that decided first, then the others
    rule: str = ""  # why: "category", "allow list", "exception ...", "safe search: ..."
    rcode: str = ""  # the answer's response code: NOERROR, NXDOMAIN, SERVFAIL, ...
    latency_ms: float | None = None
    cache_hit: bool | None = None
    severity: Severity | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as the store holds it: its sequence number is its place in the log, in the
    order the events were written, and the key the uploader ships it by."""

    seq: int
    event: Event
