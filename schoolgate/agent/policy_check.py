"""The school's annual filtering check (``policy test``), as data: what the command prints and
what the running agent reports to the collector.

One probe name per category goes through the decision code the agent runs, for every group,
and what happens is compared with what the configuration says should. The actions come from
``AgentConfig.group_actions`` and the decisions from ``Decider``: the check has no policy of
its own. It only reads: the lists it is given are neither opened nor closed here, so the agent
can check the build it serves (from a worker thread: a lookup changes nothing) and the command
line a build of its own. Described in docs/policy.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from schoolgate.agent.app import client_identifier
from schoolgate.agent.config import AgentConfig, GroupConfig
from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.categories import TIER_ORDER, Category
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.exceptions import PolicyException
from schoolgate.agent.policy.schedules import active_schedules

# Strongest first, as the decider ranks the categories a name is in.
_STRENGTH: Final = (Action.BLOCK_ALERT, Action.BLOCK, Action.ALERT, Action.ALLOW)


class PolicyTestError(ValueError):
    """A group or a probe's category that the configuration does not have."""


@dataclass(frozen=True)
class Check:
    """One group and category: what the configuration says and what the filter did."""

    group: str
    category: Category
    expected: Action
    probe: str = ""  # none for this category
    site_probe: bool = False  # given with --probe rather than by the taxonomy
    actual: Action | None = None  # None: the probe is not in the category in the lists
    decided_by: str | None = None  # the category the decision names, if one of the taxonomy
    rule: str = ""  # the decision's rule: "category", "allow list", "exception ...", ...
    listed: bool = True  # the build has a list of this category with entries in it

    @property
    def result(self) -> str:
        if not self.probe:
            return "no probe"
        if self.actual is self.expected:
            return "ok"
        if self.actual is not None and self.rule and not self.rule.startswith("category"):
            # An allow or deny entry or an exception decided it: the school's own choice,
            # reported, not a filter that fails to do what it was told.
            return "override"
        return "mismatch"

    @property
    def hidden(self) -> bool:
        # A locked category's names come from a confidential list: reports never quote them.
        return bool(self.probe) and self.category.locked

    @property
    def note(self) -> str:
        if not self.probe:
            return ""
        if self.actual is None and not self.listed:
            return "no list of this category"
        if self.actual is None:
            return "not in the category's lists"
        if not self.rule.startswith("category"):
            return self.rule
        if self.decided_by != self.category.id:
            return f"via {self.decided_by}, which comes first"
        return ""

    def data(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "category": self.category.id,
            "tier": self.category.tier.value,
            "probe": None if self.hidden else self.probe or None,
            "site_probe": self.site_probe,
            "expected": self.expected.value,
            "actual": self.actual.value if self.actual else None,
            "decided_by": self.decided_by,
            "rule": self.rule or None,
            "result": self.result,
            "note": self.note,
        }


@dataclass(frozen=True)
class PolicyTest:
    """The check's outcome: the groups checked, one ``Check`` per group and category, where
    and when it ran (``context``) and the counts (``summary``)."""

    groups: tuple[GroupConfig, ...]
    checks: tuple[Check, ...]
    context: dict[str, Any]
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    def data(self) -> dict[str, Any]:
        """The JSON object of ``policy test --format json`` and of the agent's report."""
        return {
            **self.context,
            "results": [c.data() for c in self.checks],
            "summary": self.summary,
        }


def categories_in_order(config: AgentConfig) -> list[Category]:
    """The categories by tier, the locked tier first; the taxonomy's order within a tier."""
    return sorted(config.taxonomy, key=lambda c: TIER_ORDER[c.tier])


def check_choices(
    config: AgentConfig, groups: Sequence[str], probes: Sequence[tuple[str, str]]
) -> None:
    """Refuse a group or a probe's category the configuration does not have."""
    names = [g.name for g in config.groups]
    unknown = [g for g in groups if g not in names]
    if unknown:
        raise PolicyTestError(f"no group {unknown[0]!r}; the groups are {', '.join(names)}")
    for category, _name in probes:
        if category not in config.taxonomy:
            known = ", ".join(c.id for c in categories_in_order(config))
            raise PolicyTestError(f"--probe: no category {category!r}; known: {known}")


def policy_test(
    config: AgentConfig,
    lists: CompiledLists,
    *,
    moment: dt.datetime,
    exceptions: Sequence[PolicyException],
    in_service: bool = True,
    groups: Sequence[str] = (),
    probes: Sequence[tuple[str, str]] = (),
    strict: bool = False,
) -> PolicyTest:
    """Check ``groups`` (every group when none is named) against ``lists`` as at ``moment``
    (the site's local time, naive), with ``exceptions`` in force. ``in_service`` says whether
    ``lists`` is the build the agent serves; ``probes`` are the site's own (category, name)."""
    check_choices(config, groups, probes)
    chosen = tuple(g for g in config.groups if not groups or g.name in groups)
    site = dict(probes)
    active = active_schedules(config.schedules, moment)
    # Groups are taken by name, not found from an address, so devices are not read.
    clients = client_identifier(config, {}, active, exceptions)
    ordered = categories_in_order(config)
    decider = Decider(lists, config.taxonomy)
    served = {s.category for s in lists.sources if s.entries}
    checks = tuple(
        _check(config, decider, clients.groups[g.name], g, c, active, site, served)
        for g in chosen
        for c in ordered
    )
    without = [c.id for c in ordered if not site.get(c.id, c.probe)]
    mismatches = sum(1 for c in checks if c.result == "mismatch")
    summary = {
        "checks": sum(1 for c in checks if c.probe),
        "mismatches": mismatches,
        "overrides": sum(1 for c in checks if c.result == "override"),
        "without_probe": without,
        "strict": strict,
        "passed": not mismatches and not (strict and without),
    }
    context = {
        "at": f"{moment:%Y-%m-%d %H:%M}",
        "timezone": str(config.timezone) if config.timezone else None,
        "schedules_on": [s.name for s in config.schedules if s.name in active],
        "exceptions": len(exceptions),
        "lists": {"build": lists.build_id, "names": lists.count, "in_service": in_service},
    }
    return PolicyTest(chosen, checks, context, summary)


def _check(
    config: AgentConfig,
    decider: Decider,
    group: Group,
    configured: GroupConfig,
    category: Category,
    active: frozenset[str],
    site: dict[str, str],
    served: set[str],
) -> Check:
    expected = config.group_actions(configured, active)[category.id]
    probe = site.get(category.id, category.probe)
    if not probe:
        return Check(configured.name, category, expected)
    wire = text_to_wire(probe)
    decision = decider.explain(group, wire, name_labels(wire))
    hit = _counts(config, group.actions, decision, category)
    return Check(
        configured.name,
        category,
        expected,
        probe,
        site_probe=category.id in site,
        actual=decision.action if hit else None,
        decided_by=decision.category if decision.category in config.taxonomy else None,
        rule=decision.rule,
        listed=category.id in served,
    )


def _counts(
    config: AgentConfig, actions: Mapping[str, Action], decision: Decision, category: Category
) -> bool:
    """Whether the decision is about the probed category: made for it, for a category that
    comes before it (a probe may be in several lists, and the strongest action wins), or by
    an allow or deny entry or an exception, which come before every category."""
    found = decision.category
    if found == category.id:
        return True
    if found is None or found not in config.taxonomy:
        return decision.entry is not None and not decision.rule.startswith("category")
    other = config.taxonomy[found]

    def rank(c: Category) -> tuple[int, int]:
        return (_STRENGTH.index(actions.get(c.id, Action.BLOCK)), TIER_ORDER[c.tier])

    return rank(other) <= rank(category)
