"""The decision stage: what does this client's group do with this name?

Decisions are pure functions of (group, question) for one policy version and one list build, so
they are memoized per group and the memo is dropped whenever either changes. A memo hit is one
dictionary lookup; a miss walks the suffixes of the name in the compiled lists.

When a name is in several categories the strongest action wins (block+alert, then block, then
alert), so a name in both ``games`` (allowed) and ``adult`` (blocked) is blocked, and a blocking
category and an alerting one together give block+alert. The decision names the category that
mattered most: the one with the strongest action, the more serious tier breaking ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from schoolgate.agent.dns.wire import Query, name_labels, wire_to_text
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.categories import TIER_ORDER, Taxonomy, Tier
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decision import ALLOWED, Action, Decision

_MEMO_LIMIT: Final = 20_000
_ACTION_RANK: Final = {
    Action.BLOCK_ALERT: 0,
    Action.BLOCK: 1,
    Action.ALERT: 2,
    Action.ALLOW: 3,
}

# A category a name is in: (the group's action, category, offset of the entry, its lists).
_Match = tuple[Action, str, int, tuple[str, ...]]


class _Rules:
    """One group's actions, and the build's category bits an allow entry cannot override."""

    __slots__ = ("actions", "alert_mask", "locked_mask")

    def __init__(
        self, lists: CompiledLists, actions: Mapping[str, Action], locked: frozenset[str]
    ) -> None:
        self.actions = actions
        self.alert_mask = 0
        self.locked_mask = 0
        for bit, category in enumerate(lists.categories):
            if category in locked:
                self.locked_mask |= 1 << bit
            if actions.get(category, Action.BLOCK).alerts:
                self.alert_mask |= 1 << bit


class Decider:
    """Applies each group's category actions to the compiled lists."""

    def __init__(self, lists: CompiledLists, taxonomy: Taxonomy | None = None) -> None:
        self.lists = lists
        self.taxonomy = taxonomy
        self._rules: dict[str, _Rules] = {}
        self._locked = frozenset(c.id for c in taxonomy if c.locked) if taxonomy else frozenset()
        self._bypass = (
            frozenset(c.id for c in taxonomy if c.tier is Tier.BYPASS) if taxonomy else frozenset()
        )

    def forget(self, group: Group) -> None:
        """Drop what was worked out from a group's old actions."""
        self._rules.pop(group.name, None)

    def rules(self, group: Group) -> _Rules:
        rules = self._rules.get(group.name)
        if rules is None:
            rules = self._rules[group.name] = _Rules(self.lists, group.actions, self._locked)
        return rules

    def decide(self, group: Group, query: Query) -> Decision:
        """The decision for ``query``; raises ``MalformedQuery`` for a name whose labels are bad."""
        decision = group.memo.get(query.key)
        if decision is None:
            decision = self._remember(group, group.memo, query.key, query.qname, query.labels)
        return decision

    def decide_name(self, group: Group, wire: bytes) -> Decision:
        """The decision for a bare name (a CNAME target), whatever the record type."""
        decision = group.name_memo.get(wire)
        if decision is None:
            decision = self._remember(group, group.name_memo, wire, wire, name_labels(wire))
        return decision

    def blocked_target(self, group: Group, targets: Iterable[bytes]) -> Decision | None:
        """The decision blocking the first of an answer's CNAME ``targets`` the group may not
        reach, or None: an answer leading into a blocked name is blocked too."""
        for target in targets:
            decision = self.decide_name(group, target)
            if decision.blocked:
                return decision
        return None

    def _remember(
        self,
        group: Group,
        memo: dict[bytes, Decision],
        key: bytes,
        qname: bytes,
        labels: list[int],
    ) -> Decision:
        decision = self._decide(group, qname, labels)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()  # bounded: a flood of random names must not grow memory
        memo[key] = decision
        return decision

    def _decide(self, group: Group, qname: bytes, labels: list[int]) -> Decision:
        decision = self._categorize(group, qname, labels)
        if group.rewrites and not decision.blocked:
            return self._rewritten(group, qname, decision)
        return decision

    def _categorize(self, group: Group, qname: bytes, labels: list[int]) -> Decision:
        rules = self.rules(group)
        if group.overrides:
            override = self._override(group, qname, labels)
            if override is not None:
                if self.lists.lookup(qname, labels) & (rules.locked_mask | rules.alert_mask):
                    return self._explain(group, qname, labels)  # locked, or an alert to keep
                return override
        if not self.lists.lookup(qname, labels):
            return ALLOWED
        # A name in categories the group allows is explained too (once: decisions are
        # memoized), so that the activity log and the metrics know its category.
        return self._explain(group, qname, labels)

    @staticmethod
    def _override(group: Group, qname: bytes, labels: list[int]) -> Decision | None:
        """The group's allow or deny entry (list or exception) covering the name, the most
        specific first."""
        overrides = group.overrides
        for offset in labels:
            found = overrides.get(qname[offset:])
            if found is not None:
                return found
        return None

    @staticmethod
    def _rewritten(group: Group, qname: bytes, decision: Decision) -> Decision:
        """A name let through, led to the engine's safe-mode host when the group has one for
        it. Blocking comes first: a group that blocks an engine's category never reaches it."""
        rewrite = group.rewrites.get(qname)
        if rewrite is None:
            return decision
        if decision.action is Action.ALLOW:
            return rewrite
        return Decision(
            decision.action,
            rewrite.rule,
            category=decision.category,
            entry=decision.entry,
            lists=decision.lists,
            rewrite=rewrite.rewrite,
            categories=decision.categories,
            bypass=decision.bypass,
        )

    def explain(self, group: Group, qname: bytes, labels: list[int]) -> Decision:
        """The full decision with its reasons (the slow path, also used by ``check``).

        Categories the group allows are reported too when nothing else matched, so that
        ``check`` can say which category a name is in even when it is let through.
        """
        decision = self._explain(group, qname, labels)
        if group.rewrites and not decision.blocked:
            return self._rewritten(group, qname, decision)
        return decision

    def _explain(self, group: Group, qname: bytes, labels: list[int]) -> Decision:
        actions = self.rules(group).actions
        found: list[_Match] = []
        for offset, sources in self.lists.matches(qname, labels):
            for category in dict.fromkeys(s.category for s in sources):
                names = tuple(s.name for s in sources if s.category == category)
                # A category the build has but the policy does not know is blocked: lists are
                # only ever added to be acted on, and failing open would be the wrong way to fail.
                found.append((actions.get(category, Action.BLOCK), category, offset, names))
        override = self._override(group, qname, labels) if group.overrides else None
        if override is not None and not any(m[1] in self._locked for m in found):
            return self._overridden(override, found)
        if not found:
            return ALLOWED
        blocks = any(action.blocks for action, *_ in found)
        alerts = any(action.alerts for action, *_ in found)
        _, category, offset, names = min(found, key=self._severity)
        rule = "category" if blocks or alerts else "category allowed"
        return Decision(
            Action.combine(blocks, alerts),
            rule=rule,
            category=category,
            entry=wire_to_text(qname[offset:]).rstrip("."),
            lists=names,
            categories=tuple(dict.fromkeys(m[1] for m in sorted(found, key=self._severity))),
            bypass=any(m[1] in self._bypass for m in found),
        )

    def _overridden(self, override: Decision, found: list[_Match]) -> Decision:
        """An allow or deny entry decides whether the name is blocked, but never silences an
        alert: the safeguarding lead hears of a pupil reaching a category that alerts, even on
        a name the school let through on purpose."""
        alerting = [m for m in found if m[0].alerts]
        if not alerting:
            return override
        _, category, _, names = min(alerting, key=self._severity)
        return Decision(
            Action.combine(override.blocked, True),
            rule=override.rule,
            category=category,
            entry=override.entry,
            lists=names,
            categories=tuple(dict.fromkeys(m[1] for m in sorted(alerting, key=self._severity))),
            bypass=any(m[1] in self._bypass for m in alerting),
        )

    def _severity(self, item: _Match) -> tuple[int, int, int]:
        action, category, offset, _ = item
        tier = 99
        if self.taxonomy is not None and category in self.taxonomy:
            tier = TIER_ORDER[self.taxonomy[category].tier]
        # The most specific entry (the longest matching suffix, smallest offset) breaks ties.
        return (_ACTION_RANK[action], tier, offset)
