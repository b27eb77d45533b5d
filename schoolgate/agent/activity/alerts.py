"""Safeguarding alerts, raised on the event loop the moment a query decides one.

Two kinds:

* a **category alert**: a device looked up a name in a category whose action is ``alert`` or
  ``block+alert``. Its severity comes from the category's tier. A browser asks for A, AAAA
  and HTTPS records on every visit, and again for every page, so the same device asking for
  the same name in the same category raises one alert per ``quiet_minutes``; every lookup is
  still logged.
* **repeated attempts**: a device had ``repeated_blocks`` lookups blocked within
  ``repeated_minutes``: someone is trying to get round the filter, or a device is infected.
  At most one such alert per device per window.

Both are ``Event``s of kind ``alert`` that go to the buffer's urgent queue: written at once,
never behind a batch of ordinary queries.

A lookup of a name in a bypass category (encrypted DNS, VPNs, proxies) also raises an event,
of kind ``bypass``, whatever the group's action: someone is trying a way round the filter. It
is quiet for ``quiet_minutes`` per device and name, like a category alert, and goes with the
ordinary events. The state kept here (recent blocks per device, alerts
recently raised) is bounded: a flood of spoofed addresses empties it rather than grows it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from schoolgate.agent.activity.events import Event, EventKind, Severity
from schoolgate.agent.activity.names import query_name, type_name
from schoolgate.agent.dns.wire import Query
from schoolgate.agent.policy.categories import Taxonomy, Tier
from schoolgate.agent.policy.clients import Client
from schoolgate.agent.policy.decision import Decision

SEVERITY_BY_TIER: Final = {
    Tier.LOCKED: Severity.CRITICAL,
    Tier.SAFEGUARDING: Severity.HIGH,
    Tier.SECURITY: Severity.MEDIUM,
    Tier.BYPASS: Severity.MEDIUM,
    Tier.AGE_APPROPRIATE: Severity.LOW,
    Tier.PRODUCTIVITY: Severity.LOW,
}
_RANK: Final = {s: rank for rank, s in enumerate(Severity)}  # CRITICAL first

REASON_CATEGORY: Final = "category"
REASON_REPEATED: Final = "repeated-attempts"

# Devices and (device, name, category) triples remembered at most; past this, entries whose
# window is over are forgotten, and if that is not enough, everything is.
_TRACKED_LIMIT: Final = 65_536


@dataclass(frozen=True)
class AlertSettings:
    repeated_blocks: int = 20  # 0: no repeated-attempts alerts
    repeated_minutes: float = 5.0
    quiet_minutes: float = 10.0


class Alerts:
    def __init__(self, settings: AlertSettings, taxonomy: Taxonomy | None = None) -> None:
        self.settings = settings
        self._severity: dict[str, Severity] = {}
        self.configure(settings, taxonomy)
        self._raised: dict[tuple[str, bytes, str], float] = {}  # last alert per device/name
        self._blocks: dict[str, deque[float]] = {}  # recent blocked lookups per device
        self._repeated: dict[str, float] = {}  # last repeated-attempts alert per device
        self.raised: dict[tuple[str, Severity], int] = {}  # by reason and severity
        self.suppressed = 0  # category alerts not raised again within quiet_minutes
        self._bypassed: dict[tuple[str, bytes, str], float] = {}  # last bypass event per name
        self.bypass_lookups = 0  # bypass events raised for lookups

    def configure(self, settings: AlertSettings, taxonomy: Taxonomy | None) -> None:
        """New settings or categories (a reload); what was seen so far is kept."""
        self.settings = settings
        self._severity = (
            {c.id: SEVERITY_BY_TIER[c.tier] for c in taxonomy} if taxonomy is not None else {}
        )

    def severity(self, category: str | None) -> Severity:
        """A category's severity; an unknown one (a site's list the taxonomy lacks) is
        taken as seriously as a safeguarding one."""
        if category is None:
            return Severity.MEDIUM
        return self._severity.get(category, Severity.HIGH)

    def category(
        self, now: float, client: Client, query: Query, decision: Decision
    ) -> Event | None:
        """The alert for a lookup in an alerting category, or None within the quiet time of the
        same alert."""
        key = (client.address, query.qname, decision.category or "")
        last = self._raised.get(key)
        if last is not None and 0 <= now - last < self.settings.quiet_minutes * 60:
            self.suppressed += 1
            return None
        if len(self._raised) >= _TRACKED_LIMIT:
            self._forget_old(self._raised, now, self.settings.quiet_minutes * 60)
        self._raised[key] = now
        severity = self.severity(decision.category)
        self._count(REASON_CATEGORY, severity)
        return self._event(now, client, query, decision, severity, {"reason": REASON_CATEGORY})

    def bypass_lookup(
        self, now: float, client: Client, query: Query, decision: Decision
    ) -> Event | None:
        """The bypass event for a lookup of a name in a bypass category, or None within the
        quiet time of the same one."""
        key = (client.address, query.qname, "")
        last = self._bypassed.get(key)
        if last is not None and 0 <= now - last < self.settings.quiet_minutes * 60:
            return None
        if len(self._bypassed) >= _TRACKED_LIMIT:
            self._forget_old(self._bypassed, now, self.settings.quiet_minutes * 60)
        self._bypassed[key] = now
        self.bypass_lookups += 1
        return self._event(now, client, query, decision, None, {"via": "lookup"})

    def blocked(self, now: float, client: Client, query: Query, decision: Decision) -> Event | None:
        """Count a blocked lookup; the repeated-attempts alert when this one crosses the line."""
        s = self.settings
        if s.repeated_blocks <= 0:
            return None
        window = s.repeated_minutes * 60
        recent = self._blocks.get(client.address)
        if recent is None:
            if len(self._blocks) >= _TRACKED_LIMIT:
                self._forget_quiet_devices(now, window)
            recent = self._blocks[client.address] = deque(maxlen=s.repeated_blocks)
        elif recent.maxlen != s.repeated_blocks:  # the setting changed on a reload
            recent = self._blocks[client.address] = deque(recent, maxlen=s.repeated_blocks)
        recent.append(now)
        if len(recent) < s.repeated_blocks or now - recent[0] > window:
            return None
        last = self._repeated.get(client.address)
        if last is not None and 0 <= now - last < window:
            return None
        self._repeated[client.address] = now
        recent.clear()
        # As serious as the category blocked, but never below medium: it is a pattern.
        severity = min(self.severity(decision.category), Severity.MEDIUM, key=_RANK.__getitem__)
        self._count(REASON_REPEATED, severity)
        data = {
            "reason": REASON_REPEATED,
            "blocked": s.repeated_blocks,
            "minutes": s.repeated_minutes,
        }
        return self._event(now, client, query, decision, severity, data)

    def _count(self, reason: str, severity: Severity) -> None:
        key = (reason, severity)
        self.raised[key] = self.raised.get(key, 0) + 1

    @staticmethod
    def _event(
        now: float,
        client: Client,
        query: Query,
        decision: Decision,
        severity: Severity | None,
        data: dict[str, object],
    ) -> Event:
        """An alert (with its severity) or, without one, a bypass event, about a query."""
        return Event(
            kind=EventKind.ALERT if severity is not None else EventKind.BYPASS,
            time=now,
            client_ip=client.address,
            mac=client.mac,
            hostname=client.hostname,
            group=client.group.name,
            name=query_name(query),
            qtype=type_name(query.qtype),
            action=decision.action.value,
            categories=decision.categories,
            rule=decision.rule,
            severity=severity,
            data=data,
        )

    @staticmethod
    def _forget_old(seen: dict[tuple[str, bytes, str], float], now: float, keep: float) -> None:
        for key in [k for k, t in seen.items() if not 0 <= now - t < keep]:
            del seen[key]
        if len(seen) >= _TRACKED_LIMIT:
            seen.clear()

    def _forget_quiet_devices(self, now: float, window: float) -> None:
        for address in [a for a, d in self._blocks.items() if not d or now - d[-1] > window]:
            del self._blocks[address]
            self._repeated.pop(address, None)
        if len(self._blocks) >= _TRACKED_LIMIT:
            self._blocks.clear()
            self._repeated.clear()
