"""Events as an agent ships them, for the collector's tests."""

from __future__ import annotations

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent


def shipped_events(first: int, count: int, when: float, **fields: object) -> list[ShippedEvent]:
    """``count`` events numbered from ``first``, each at ``when`` plus its number in ms (so each
    has a time of its own), with ``fields`` set on all of them."""
    made = []
    for seq in range(first, first + count):
        values: dict[str, object] = {"seq": seq, "kind": EventKind.DNS, "time": when + seq / 1000}
        values.update(fields)
        made.append(ShippedEvent(**values))  # type: ignore[arg-type]
    return made
