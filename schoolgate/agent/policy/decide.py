"""The decision stage: is this name allowed for this client's group?

Decisions are pure functions of (group, question) for one policy version and one list build, so
they are memoized per group and the memo is dropped whenever either changes. A memo hit is one
dictionary lookup; a miss walks the suffixes of the name in the compiled lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from schoolgate.agent.dns.wire import Query, name_labels, wire_to_text
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decision import ALLOWED, Action, Decision

_MEMO_LIMIT: Final = 20_000


class Decider:
    """Blocks every name covered by a list of a blocked category."""

    def __init__(self, lists: CompiledLists, blocked: Iterable[str] | None = None) -> None:
        self.lists = lists
        wanted = set(lists.categories if blocked is None else blocked)
        self.blocked_mask = sum(1 << i for i, c in enumerate(lists.categories) if c in wanted)

    def decide(self, group: Group, query: Query) -> Decision:
        """The decision for ``query``; raises ``MalformedQuery`` for a name whose labels are bad."""
        decision = group.memo.get(query.key)
        if decision is None:
            decision = self._remember(group.memo, query.key, query.qname, query.labels)
        return decision

    def decide_name(self, group: Group, wire: bytes) -> Decision:
        """The decision for a bare name (a CNAME target), whatever the record type."""
        decision = group.name_memo.get(wire)
        if decision is None:
            decision = self._remember(group.name_memo, wire, wire, name_labels(wire))
        return decision

    def _remember(
        self, memo: dict[bytes, Decision], key: bytes, qname: bytes, labels: list[int]
    ) -> Decision:
        decision = self._decide(qname, labels)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()  # bounded: a flood of random names must not grow memory
        memo[key] = decision
        return decision

    def _decide(self, qname: bytes, labels: list[int]) -> Decision:
        if not self.blocked_mask or not self.lists.lookup(qname, labels) & self.blocked_mask:
            return ALLOWED
        return self.explain(qname, labels)

    def explain(self, qname: bytes, labels: list[int]) -> Decision:
        """The full decision with its reasons (the slow path, also used by ``check``)."""
        lists = self.lists
        blocked = set(lists.category_names(self.blocked_mask))
        for offset, sources in lists.matches(qname, labels):
            blocking = [s for s in sources if s.category in blocked]
            if blocking:
                return Decision(
                    Action.BLOCK,
                    rule="list",
                    category=blocking[0].category,
                    entry=wire_to_text(qname[offset:]).rstrip("."),
                    lists=tuple(s.name for s in blocking),
                )
        return ALLOWED
