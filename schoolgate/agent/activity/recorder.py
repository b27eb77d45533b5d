"""What the query path records, and how it becomes the rows of the activity store.

The query path appends one tuple per answered query to the buffer (``QueryRecord``: a few
references and numbers, no formatting) and ready-made ``Event``s for the rare things (alerts).
``EventMaker`` turns a batch of both into rows in the writer's thread: names to text, codes
to mnemonics, the site's choice of what to keep (every query, or only the blocked and alerting
ones) and, when the site asks for it, client identities replaced by pseudonyms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import msgspec

from schoolgate.agent.activity.events import Event
from schoolgate.agent.activity.names import key_name, key_type, rcode_name, type_name
from schoolgate.agent.activity.pseudonyms import Pseudonyms
from schoolgate.agent.activity.settings import QueryLogging
from schoolgate.agent.activity.store import (
    EventRow,
    categories_text,
    event_row,
    reversed_name,
)
from schoolgate.agent.policy.clients import Client
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.stats import Outcome

# (received, client, question key, decision, outcome, rcode, latency in seconds, from cache)
QueryRecord = tuple[float, Client, bytes, Decision, Outcome, int, float, bool]

# The text of the names and decisions seen lately. A cache-hit mix repeats a few thousand names;
# a flood of misses repeats none, so a bigger memo would only hold text that is never used again.
_MEMO_LIMIT: Final = 8_192
YIELD_EVERY: Final = 32
_STALE: Final = msgspec.json.encode({"stale": True}).decode()
_RCODES: Final = {code: rcode_name(code) for code in range(16)}


class EventMaker:
    """Makes the rows the store writes from what the query path recorded.

    A query's record goes straight to a row, without an ``Event`` in between: this runs for
    every query, in a thread that shares the interpreter lock with the DNS service, so the
    text of each question and of each decision is made once and remembered.
    """

    def __init__(self, queries: QueryLogging, pseudonyms: Pseudonyms | None = None) -> None:
        self.queries = queries
        self.pseudonyms = pseudonyms
        self.skipped = 0  # queries left out by the site's choice
        # By question: (name, reversed name, type); by decision: (action, categories, rule).
        self._names: dict[bytes, tuple[str, str, str]] = {}
        self._decisions: dict[Decision, tuple[str, str, str]] = {}

    def __call__(self, items: Sequence[object]) -> list[EventRow]:
        rows: list[EventRow] = []
        for i, item in enumerate(items):
            if not i % YIELD_EVERY:
                # This runs in the writer's thread but holds the interpreter lock: let the
                # DNS service's thread have it now and then.
                time.sleep(0)
            if isinstance(item, Event):
                rows.append(event_row(self._hide(item) if self.pseudonyms is not None else item))
                continue
            row = self._query_row(item)  # type: ignore[arg-type]
            if row is not None:
                rows.append(row)
        return rows

    def keeps(self, decision: Decision, outcome: Outcome) -> bool:
        if self.queries is QueryLogging.ALL:
            return True
        if self.queries is QueryLogging.NONE:
            return False
        return outcome is Outcome.BLOCKED or decision.blocked or decision.alert

    def _query_row(self, record: QueryRecord) -> EventRow | None:
        received, client, key, decision, outcome, rcode, latency, cache_hit = record
        if self.queries is not QueryLogging.ALL and not self.keeps(decision, outcome):
            self.skipped += 1
            return None
        names = self._names.get(key)
        if names is None:
            if len(self._names) >= _MEMO_LIMIT:
                self._names.clear()
            name = key_name(key)
            names = self._names[key] = (name, reversed_name(name), type_name(key_type(key)))
        said = self._decisions.get(decision)
        if said is None:
            if len(self._decisions) >= _MEMO_LIMIT:
                self._decisions.clear()
            said = self._decisions[decision] = (
                decision.action.value,
                categories_text(decision.categories),
                decision.rule,
            )
        action = said[0]
        if outcome is Outcome.REWRITTEN and decision.action is Action.ALLOW:
            action = "rewrite"
        address, mac, hostname = client.address, client.mac, client.hostname
        hide = self.pseudonyms
        if hide is not None:
            address, mac, hostname = hide(address), hide(mac), hide(hostname)
        # In the order of the store's COLUMNS (a test holds the two together).
        return (
            "dns",
            received,
            address,
            mac,
            hostname,
            client.group.name,
            names[0],
            names[1],
            names[2],
            action,
            said[1],
            said[2],
            _RCODES.get(rcode) or rcode_name(rcode),
            round(latency * 1000, 3),  # monotonic: never negative
            1 if cache_hit else 0,
            None,
            _STALE if outcome is Outcome.STALE else "",
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
