"""What the query path records, and how it becomes events.

The query path appends one tuple per answered query to the buffer (``QueryRecord``: a few
references and numbers, no formatting) and ready-made ``Event``s for the rare things (alerts).
``EventMaker`` turns a batch of both into events in the writer's thread: names to text, codes
to mnemonics, the site's choice of what to keep (every query, or only the blocked and alerting
ones) and, when the site asks for it, client identities replaced by pseudonyms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import msgspec

from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.names import query_name, rcode_name, type_name
from schoolgate.agent.activity.pseudonyms import Pseudonyms
from schoolgate.agent.activity.settings import QueryLogging
from schoolgate.agent.dns.wire import Query
from schoolgate.agent.policy.clients import Client
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.stats import Outcome

# (received, client, query, decision, outcome, rcode, latency in seconds, answered from cache)
QueryRecord = tuple[float, Client, Query, Decision, Outcome, int, float, bool]

_NAMES_LIMIT: Final = 50_000
YIELD_EVERY: Final = 200


class EventMaker:
    def __init__(self, queries: QueryLogging, pseudonyms: Pseudonyms | None = None) -> None:
        self.queries = queries
        self.pseudonyms = pseudonyms
        self.skipped = 0  # queries left out by the site's choice
        # The text of a name and type, by question: the same ones come again and again.
        self._names: dict[bytes, tuple[str, str]] = {}

    def __call__(self, items: Sequence[object]) -> list[Event]:
        events: list[Event] = []
        for i, item in enumerate(items):
            if not i % YIELD_EVERY:
                # This runs in the writer's thread but holds the interpreter lock: let the
                # DNS service's thread have it now and then, or a batch would delay its
                # answers by up to the interpreter's switch interval (5 ms).
                time.sleep(0)
            if isinstance(item, Event):
                events.append(self._hide(item) if self.pseudonyms is not None else item)
            else:
                event = self._query_event(item)  # type: ignore[arg-type]
                if event is not None:
                    events.append(event)
        return events

    def keeps(self, decision: Decision, outcome: Outcome) -> bool:
        if self.queries is QueryLogging.ALL:
            return True
        if self.queries is QueryLogging.NONE:
            return False
        return outcome is Outcome.BLOCKED or decision.blocked or decision.alert

    def _query_event(self, record: QueryRecord) -> Event | None:
        received, client, query, decision, outcome, rcode, latency, cache_hit = record
        if not self.keeps(decision, outcome):
            self.skipped += 1
            return None
        names = self._names.get(query.key)
        if names is None:
            if len(self._names) >= _NAMES_LIMIT:
                self._names.clear()
            names = self._names[query.key] = (query_name(query), type_name(query.qtype))
        action = decision.action.value
        if outcome is Outcome.REWRITTEN and decision.action is Action.ALLOW:
            action = "rewrite"
        address, mac, hostname = client.address, client.mac, client.hostname
        hide = self.pseudonyms
        if hide is not None:
            address, mac, hostname = hide(address), hide(mac), hide(hostname)
        return Event(
            kind=EventKind.DNS,
            time=received,
            client_ip=address,
            mac=mac,
            hostname=hostname,
            group=client.group.name,
            name=names[0],
            qtype=names[1],
            action=action,
            categories=decision.categories,
            rule=decision.rule,
            rcode=rcode_name(rcode),
            # A wall-clock step between receiving and answering must not show as a negative.
            latency_ms=round(max(latency, 0.0) * 1000, 3),
            cache_hit=cache_hit,
            data={"stale": True} if outcome is Outcome.STALE else {},
        )

    def _hide(self, event: Event) -> Event:
        hide = self.pseudonyms
        assert hide is not None
        return msgspec.structs.replace(
            event,
            client_ip=hide(event.client_ip),
            mac=hide(event.mac),
            hostname=hide(event.hostname),
        )
