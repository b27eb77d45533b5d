"""What a message says: plain text (and a subject) for email, a JSON object for the webhook.

Every name in an alert came from a school's network, and a pupil chooses some of them: a
name looked up can be ``<img src=x onerror=alert(1)>.example``, a laptop can be named with a
line break and ``Bcc: ...`` in it. Email is plain text, so nothing is ever markup; control
and formatting characters (line breaks, terminal escapes, right-to-left overrides) are shown
as escapes (``\\x0a``, ``\\u202e``), so a name can neither add a line that looks like ours nor
hide what it is; a header gets one line of cleaned text. The webhook sends the values as they
are, as JSON strings: a receiver that shows them must escape them for wherever it shows them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

from schoolgate import __version__
from schoolgate.agent.activity.events import Severity

IMMEDIATE: Final = "immediate"
DIGEST: Final = "digest"
TEST: Final = "test"  # ``notify test``: no alerts, never recorded
FORMAT_VERSION: Final = 1
MAX_LISTED: Final = 200  # alerts listed in one message; the rest are counted
SEVERITY_RANK: Final = {s.value: rank for rank, s in enumerate(Severity)}  # critical first

_HIDDEN: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_MAX_VALUE: Final = 255
_MAX_SUBJECT: Final = 160
_REASONS: Final = {
    "category": "a lookup in a category that raises alerts",
    "repeated-attempts": "repeated blocked lookups",
    "unapproved-device": "a device the school has not approved",
}


@dataclass(frozen=True)
class Alert:
    """One alert as a message shows it: the event's fields, as the agent sent them."""

    seq: int
    time: float
    severity: str  # as routed: an alert without a valid severity counts as high
    category: str = ""
    client_ip: str = ""
    mac: str = ""
    hostname: str = ""
    group: str = ""
    name: str = ""
    qtype: str = ""
    action: str = ""
    rule: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        found = self.data.get("reason")
        return found if isinstance(found, str) else ""


@dataclass(frozen=True)
class Draft:
    """A message to compose: its row in ``notify_messages`` and the alerts it carries."""

    id: int
    site: str
    kind: str  # IMMEDIATE or DIGEST
    alerts: Sequence[Alert]
    held: int = 0  # (digest) alerts in it that the daily cap kept from immediate messages
    acknowledged: int = 0  # (digest) alerts left out: acknowledged before it was made
    last_immediate: bool = False  # (immediate) the last one the cap allows the school today


@dataclass(frozen=True)
class Style:
    """What every message needs besides its alerts."""

    zone: tzinfo
    link: str  # the school's alert inbox, "" for none
    cap: int
    digest_at: str  # "HH:MM"


def clean(text: str, limit: int = _MAX_VALUE) -> str:
    """``text`` safe to show as plain text: invisible and line-ending characters escaped."""
    shown = "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in _HIDDEN
        else c
        for c in text[:limit]
    )
    return shown + "..." if len(text) > limit else shown


def header(text: str) -> str:
    """One line of cleaned text for an email header, spaces collapsed, within a length."""
    return " ".join(clean(text, _MAX_SUBJECT).split())[:_MAX_SUBJECT]


def ordered(alerts: Sequence[Alert]) -> list[Alert]:
    """Most severe first, then oldest first."""
    return sorted(alerts, key=lambda a: (SEVERITY_RANK.get(a.severity, 0), a.time, a.seq))


def _local(when: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(when, zone).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _what(alert: Alert) -> str:
    """What the alert is about, in a few words: its category, else its reason."""
    if alert.category:
        return alert.category
    return _REASONS.get(alert.reason, alert.reason) or "alert"


def _reason(alert: Alert) -> str:
    d = alert.data
    if alert.reason == "repeated-attempts":
        minutes = d.get("minutes")
        within = f"{minutes:g}" if isinstance(minutes, int | float) else "?"
        return f"{d.get('blocked', '?')} blocked lookups within {within} minutes"
    if alert.reason == "unapproved-device" and d.get("vendor"):
        return f"{_REASONS[alert.reason]} (maker: {d['vendor']})"
    return _REASONS.get(alert.reason, alert.reason)


def subject(draft: Draft) -> str:
    alerts = ordered(draft.alerts)
    if draft.kind == TEST:
        text = f"[schoolgate] {draft.site}: test message"
    elif draft.kind == DIGEST:
        text = f"[schoolgate] {draft.site}: daily digest, {_plural(len(alerts), 'alert', 'alerts')}"
    elif len(alerts) == 1:
        text = f"[schoolgate] {draft.site}: {alerts[0].severity} alert, {_what(alerts[0])}"
    else:
        text = (
            f"[schoolgate] {draft.site}: {len(alerts)} alerts, "
            f"the most severe {alerts[0].severity if alerts else '-'}"
        )
    return header(text)


def email_text(draft: Draft, style: Style) -> str:
    """The plain-text body of the message."""
    alerts = ordered(draft.alerts)
    lines: list[str] = []
    count = _plural(len(alerts), "alert", "alerts")
    if draft.kind == TEST:
        lines.append(
            f"A test message for {draft.site}: alert notifications reach you by this channel."
        )
    elif draft.kind == DIGEST:
        span = ""
        if alerts:
            first = min(a.time for a in alerts)
            last = max(a.time for a in alerts)
            span = f", from {_local(first, style.zone)} to {_local(last, style.zone)}"
        lines.append(f"Daily digest for {draft.site}: {count} not sent at once{span}.")
        if draft.held:
            lines.append(
                f"{_plural(draft.held, 'alert was', 'alerts were')} held back from immediate "
                f"messages by the daily limit of {style.cap} per school."
            )
        if draft.acknowledged:
            lines.append(
                f"{_plural(draft.acknowledged, 'more alert was', 'more alerts were')} "
                "acknowledged in the admin pages before this digest, and "
                f"{'is' if draft.acknowledged == 1 else 'are'} not listed."
            )
    else:
        lines.append(f"{count} at {draft.site}.")
    for alert in alerts[:MAX_LISTED]:
        lines.append("")
        lines.extend(_alert_lines(alert, style.zone))
    if len(alerts) > MAX_LISTED:
        lines += ["", f"...and {len(alerts) - MAX_LISTED:,} more: see the alert inbox."]
    if style.link:
        lines += ["", f"Alert inbox: {style.link}"]
    if draft.last_immediate:
        lines += [
            "",
            f"This is the last immediate message for {draft.site} today (at most "
            f"{style.cap} a day): later alerts today wait for the daily digest at "
            f"{style.digest_at}.",
        ]
    lines += [
        "",
        "-- ",
        f"schoolgate-collector {__version__}. Names in this message come from the school's "
        "network and are shown as plain text, with hidden characters escaped.",
    ]
    return "\n".join(lines) + "\n"


def _alert_lines(alert: Alert, zone: tzinfo) -> list[str]:
    device = ", ".join(clean(v) for v in (alert.hostname, alert.client_ip, alert.mac) if v)
    looked_up = clean(alert.name)
    if looked_up and alert.qtype:
        looked_up += f" ({clean(alert.qtype)})"
    rows = [
        ("Time", _local(alert.time, zone)),
        ("Looked up", looked_up),
        ("Device", device or "not known"),
        ("Group", clean(alert.group)),
        ("Filter", clean(alert.action)),
        ("Reason", clean(_reason(alert))),
    ]
    head = f"{alert.severity.upper()}: {clean(_what(alert))}"
    return [head] + [f"  {label + ':':<11} {value}" for label, value in rows if value]


def webhook_payload(draft: Draft, style: Style, now: float) -> dict[str, Any]:
    """The JSON object the webhook posts (format ``FORMAT_VERSION``)."""
    alerts = ordered(draft.alerts)
    return {
        "schoolgate": FORMAT_VERSION,
        "id": draft.id,
        "kind": draft.kind,
        "site": draft.site,
        "link": style.link or None,
        "sent": datetime.fromtimestamp(now, UTC).isoformat(),
        "count": len(alerts),
        "held_back": draft.held,
        "acknowledged": draft.acknowledged,
        "last_immediate": draft.last_immediate,
        "alerts": [_alert_json(a, style.zone) for a in alerts[:MAX_LISTED]],
    }


def _alert_json(alert: Alert, zone: tzinfo) -> dict[str, Any]:
    return {
        "seq": alert.seq,
        "time": alert.time,
        "utc": datetime.fromtimestamp(alert.time, UTC).isoformat(),
        "local": datetime.fromtimestamp(alert.time, zone).isoformat(),
        "severity": alert.severity,
        "category": alert.category,
        "reason": alert.reason,
        "name": alert.name,
        "qtype": alert.qtype,
        "action": alert.action,
        "rule": alert.rule,
        "client_ip": alert.client_ip,
        "mac": alert.mac,
        "hostname": alert.hostname,
        "group": alert.group,
    }
