"""The annual filtering and monitoring review of one school: the evidence its review asks for,
gathered in one place for a period (a year by default).

- what each group gets in each category, and why (the policy matrix and its groups);
- the changes of the period, each with who, when and why;
- the exceptions granted and the unblock requests decided in the period;
- the alerts of the period by category and severity, and what was done about them;
- the indicators (acknowledgement times, approved devices, agent uptime, bypass attempts);
- the latest ``policy test``, every check of it.

``gather`` reads it; the page renders it as printable HTML and ``csv_lines`` as CSV, both
from the same ``Review``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table

from schoolgate.server.agent_status import AgentStatuses
from schoolgate.server.csv_export import cell, iso
from schoolgate.server.db.schema import CentralException, UnblockRequest
from schoolgate.server.indicators import SchoolIndicators, school_indicators
from schoolgate.server.policies import GrantedException, PolicyStore, Revision
from schoolgate.server.policy_matrix import Matrix, changes, school_matrix, test_rows
from schoolgate.server.queries import EventQueries
from schoolgate.server.reviews import Reviews
from schoolgate.server.rollups import HOUR

_exceptions = cast(Table, CentralException.__table__)
_requests = cast(Table, UnblockRequest.__table__)
CSV_COLUMNS = ("section", "item", "group", "category", "value", "detail")


@dataclass(frozen=True)
class Review:
    site: str
    since: float
    until: float
    queries: int
    blocked: int
    indicators: SchoolIndicators
    matrix: Matrix | None
    changes: list[Revision]
    exceptions: list[GrantedException]
    requests: dict[str, int]  # decided in the period, by status
    alerts: list[dict[str, Any]]  # category, severity, alerts, acknowledged
    outcomes: dict[str, int]  # of the period's alerts acknowledged, by outcome
    tested: float | None
    test: Mapping[str, Any] | None

    @property
    def test_results(self) -> list[dict[str, Any]]:
        return test_rows(self.test, ("ok", "mismatch", "override", "no probe"))


def gather(
    queries: EventQueries,
    policies: PolicyStore,
    site: Mapping[str, Any],
    since: float,
    until: float,
    language: str,
) -> Review:
    """The review of ``site`` (a row of ``EventQueries.sites``) from ``since`` to ``until``."""
    engine = queries.engine
    reviews = Reviews(engine)
    site_id = site["id"]
    totals = queries.totals([site_id], since - since % HOUR, until, ())
    health = AgentStatuses(engine).health([site_id]).get(site_id)
    [indicators] = school_indicators(engine, [site], since, until)
    return Review(
        site=site["name"],
        since=since,
        until=until,
        queries=totals[0]["queries"] if totals else 0,
        blocked=totals[0]["blocked"] if totals else 0,
        indicators=indicators,
        matrix=school_matrix(policies, site_id, health, language),
        changes=[c for c in changes(policies, site_id, since) if c.created < until],
        exceptions=policies.granted_between(site_id, since, until),
        requests=policies.decided_counts(site_id, since, until),
        alerts=reviews.alert_breakdown(site_id, since, until),
        outcomes=reviews.outcome_counts(site_id, since, until),
        tested=health.tested if health else None,
        test=health.policy_test if health else None,
    )


def _rows(review: Review) -> Iterator[tuple[Any, ...]]:
    i = review.indicators
    yield ("period", "from", "", "", iso(review.since), "")
    yield ("period", "until", "", "", iso(review.until), "")
    yield ("summary", "dns queries", "", "", review.queries, "")
    yield ("summary", "blocked", "", "", review.blocked, "")
    yield ("summary", "alerts", "", "", i.alerts, "")
    yield ("summary", "alerts acknowledged", "", "", i.acknowledged, "")
    yield ("summary", "median seconds to acknowledge", "", "", i.median_ack, "")
    yield ("summary", "devices", "", "", i.devices, "")
    yield ("summary", "devices approved or known", "", "", i.approved, "")
    yield ("summary", "agent uptime", "", "", i.uptime, "share of the period")
    yield ("summary", "bypass events", "", "", i.bypass_events, "")
    yield ("summary", "bypass lookups blocked", "", "", i.bypass_lookups, "")
    matrix = review.matrix
    if matrix is not None:
        for category, tier in matrix.categories:
            for group in matrix.groups:
                found = matrix.cell(category, group.name)
                if found is not None:
                    during = "; ".join(f"during {s}: {a}" for s, a in found.during)
                    yield (
                        f"policy ({matrix.source})",
                        tier,
                        group.name,
                        category,
                        found.action,
                        during,
                    )
    for c in review.changes:
        which = "district" if c.site_id is None else "school"
        yield (
            "change",
            f"{which} revision {c.id}",
            "",
            "",
            iso(c.created),
            f"{c.reason} ({c.author})",
        )
    for x in review.exceptions:
        only = f"only the device {x.device}: " if x.device else ""
        detail = f"{only}{x.reason} ({x.author}, until {iso(x.expires)})"
        yield ("exception", x.name, x.group, "", x.action, detail)
    for status, n in sorted(review.requests.items()):
        yield ("unblock requests", status, "", "", n, "")
    for a in review.alerts:
        yield (
            "alerts",
            a["severity"] or "",
            "",
            a["category"],
            a["alerts"],
            f"{a['acknowledged']} acknowledged",
        )
    for outcome, n in sorted(review.outcomes.items()):
        yield ("alert outcomes", outcome, "", "", n, "")
    if review.tested is not None:
        yield ("policy test", "ran", "", "", iso(review.tested), "")
    for r in review.test_results:
        detail = "; ".join(p for p in (f"did {r['actual']}" if r["actual"] else "", r["note"]) if p)
        yield ("policy test", r["result"], r["group"], r["category"], r["expected"], detail)


def csv_lines(review: Review) -> str:
    """The review as CSV (``CSV_COLUMNS``), every cell guarded against formulas: names,
    reasons and notes were typed by people or came from the network."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in _rows(review):
        writer.writerow([cell(v) for v in row])
    return out.getvalue()
