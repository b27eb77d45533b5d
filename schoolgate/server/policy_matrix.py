"""What each group of a school gets in each category: the policy matrix the admin pages and
the annual review show.

It comes from one of two places, and says which:

- ``central``: the district's document with the school's on top, made into the agent's own
  configuration and read with the code behind ``schoolgate-agent policy show``, so the
  collector shows exactly what the agent will enforce, schedules included;
- ``agent``: for a school whose policy is not managed centrally, the actions its agent
  reported in its latest ``policy test`` (as configured at that moment), since the collector
  has no other word of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from schoolgate.agent.cli_policy import show_data
from schoolgate.agent.config import ConfigError
from schoolgate.agent.policy.categories import LANGUAGES
from schoolgate.server.agent_status import AgentHealth
from schoolgate.server.policies import PolicyStore, Revision
from schoolgate.server.policy_documents import Document, agent_config

HISTORY: Final = 50  # revisions of each document read for a school's changes
CENTRAL: Final = "central"
AGENT: Final = "agent"


@dataclass(frozen=True)
class GroupColumn:
    name: str
    default: bool = False
    age_tier: str = ""
    members: tuple[str, ...] = ()  # addresses, MACs and DHCP names, as written
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    safesearch: tuple[str, ...] = ()
    youtube: str = ""


@dataclass(frozen=True)
class Cell:
    action: str  # outside every schedule (central), or when the test ran (agent)
    during: tuple[tuple[str, str], ...] = ()  # (schedule, action) where a schedule changes it


@dataclass(frozen=True)
class Matrix:
    source: str  # CENTRAL or AGENT
    groups: tuple[GroupColumn, ...]
    categories: tuple[tuple[str, str], ...]  # (id, tier), the locked tier first
    cells: Mapping[tuple[str, str], Cell]  # by (category, group)
    schedules: tuple[Mapping[str, Any], ...] = ()  # name, days, times, dates, except_dates
    error: str = ""  # why the central document could not be read, if it could not
    notes: Mapping[str, str] = field(default_factory=dict)

    def cell(self, category: str, group: str) -> Cell | None:
        return self.cells.get((category, group))


def from_policy(sections: Document, language: str = "en") -> Matrix:
    """The matrix of an effective central policy (the district's with the school's on top)."""
    try:
        config = agent_config(sections, "the school's effective policy")
    except ConfigError as exc:
        # Stored revisions were checked when saved; a newer agent taxonomy may still refuse
        # one. Say so rather than fail the page.
        return Matrix(CENTRAL, (), (), {}, error=str(exc))
    data = show_data(config, language if language in LANGUAGES else "en")
    groups = tuple(
        GroupColumn(
            name=g["name"],
            default=g["default"],
            age_tier=g["age_tier"],
            members=(
                *g["members"]["addresses"],
                *g["members"]["macs"],
                *g["members"]["hostnames"],
            ),
            allow=tuple(g["allow"]),
            deny=tuple(g["deny"]),
            safesearch=tuple(g["settings"]["safesearch"]),
            youtube=g["settings"]["youtube"],
        )
        for g in data["groups"]
    )
    cells = {
        (category, g["name"]): Cell(
            action,
            tuple(
                (schedule, actions[category])
                for schedule, actions in g["schedules"].items()
                if actions[category] != action
            ),
        )
        for g in data["groups"]
        for category, action in g["actions"].items()
    }
    return Matrix(
        CENTRAL,
        groups,
        tuple((c["id"], c["tier"]) for c in data["categories"]),
        cells,
        tuple(data["schedules"]),
    )


def from_test(test: Mapping[str, Any]) -> Matrix | None:
    """The matrix as an agent's ``policy test`` saw it: the configured action of each group
    and category when the test ran. None when the report holds no results."""
    results = test.get("results")
    if not isinstance(results, list):
        return None
    groups: dict[str, None] = {}
    categories: dict[str, str] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for row in results:
        if not isinstance(row, dict):
            continue
        group, category, expected = row.get("group"), row.get("category"), row.get("expected")
        if not (isinstance(group, str) and isinstance(category, str) and isinstance(expected, str)):
            continue
        groups.setdefault(group, None)
        tier = row.get("tier")
        categories.setdefault(category, tier if isinstance(tier, str) else "")
        cells[(category, group)] = Cell(expected)
    if not cells:
        return None
    on = test.get("schedules_on")
    return Matrix(
        AGENT,
        tuple(GroupColumn(name) for name in groups),
        tuple(categories.items()),
        cells,
        notes={
            "at": str(test.get("at", "")),
            "schedules_on": ", ".join(s for s in on if isinstance(s, str))
            if isinstance(on, list)
            else "",
        },
    )


def test_rows(test: Mapping[str, Any] | None, results: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a ``policy test`` report whose result is one of ``results`` (``ok``,
    ``mismatch``, ``override``, ``no probe``), each field of the right type or empty."""
    rows = (test or {}).get("results")
    if not isinstance(rows, list):
        return []
    keys = ("group", "category", "tier", "probe", "expected", "actual", "rule", "result", "note")
    return [
        {k: row.get(k) if isinstance(row.get(k), str) else "" for k in keys}
        for row in rows
        if isinstance(row, dict) and row.get("result") in results
    ]


def school_matrix(
    policies: PolicyStore, site_id: int, health: AgentHealth | None, language: str
) -> Matrix | None:
    """The school's matrix: the central policy when one applies to it, else its agent's
    latest test; None when the collector knows neither."""
    effective = policies.effective(site_id)
    if effective.district_revision is not None or effective.site_revision is not None:
        return from_policy(effective.sections, language)
    if health is not None and health.policy_test is not None:
        return from_test(health.policy_test)
    return None


def changes(policies: PolicyStore, site_id: int, since: float = 0.0) -> list[Revision]:
    """The district's revisions and the school's, newest first, from ``since``."""
    both = [*policies.history(None, HISTORY), *policies.history(site_id, HISTORY)]
    return sorted((r for r in both if r.created >= since), key=lambda r: r.created, reverse=True)
