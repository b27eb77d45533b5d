"""The overview: how much the schools looked up and how much of it was blocked, day by day;
the categories and names behind it; and for each school, what waits for somebody (open
alerts, new devices, unblock requests) and whether its agent is reporting.

Counts come from ``event_counts`` (hours) and ``blocked_names`` (days), never from counting
events, so a district's overview over 90 days reads thousands of rows, not billions. Hours
are put into days in the collector's time zone, so a school's day is its own.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.server.agent_status import AgentHealth
from schoolgate.server.auth import Permission
from schoolgate.server.rollups import day_of, hour_of
from schoolgate.server.web import _charts
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._i18n import Translator
from schoolgate.server.web._labels import N_

PERIODS: Final = ("7", "30", "90")
DAY: Final = 86_400.0
OPEN_ALERT_DAYS: Final = 30
TOP: Final = 10
SILENT_SECONDS: Final = 3_600.0


def local_days(t: Translator, since: float, now: float) -> list[float]:
    """The starts of the local days from the one holding ``since`` to the one holding
    ``now``, as seconds (a day may be 23 or 25 hours long)."""
    first = datetime.fromtimestamp(since, t.zone).replace(hour=0, minute=0, second=0, microsecond=0)
    days: list[float] = []
    moment = first
    while moment.timestamp() <= now:
        days.append(moment.timestamp())
        # Wall-clock arithmetic: the next midnight, whatever the clocks did in between.
        moment = (moment.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=t.zone)
    return days


def by_local_day(
    t: Translator, rows: list[dict[str, Any]], since: float, now: float
) -> list[tuple[float, dict[str, int]]]:
    """Hourly totals summed into local days, every day present (empty ones as zeros)."""
    days = local_days(t, since, now)
    sums: dict[float, dict[str, int]] = {d: defaultdict(int) for d in days}
    for row in rows:
        day = _day_holding(days, row["hour"])
        if day is None:
            continue
        for name in ("queries", "blocked", "alerts"):
            sums[day][name] += row[name]
    return [(d, dict(sums[d])) for d in days]


def _day_holding(days: list[float], moment: float) -> float | None:
    index = bisect_right(days, moment) - 1
    return days[index] if index >= 0 else None


def agent_health(health: AgentHealth | None, last_seen: float | None, now: float) -> dict[str, Any]:
    """What the schools table says of an agent: whether it is silent (no heartbeat for a few
    of its intervals; for an agent that sends none, no batch for an hour), its version, how
    fresh its lists are and what it had to drop."""
    if health is None or not health.reported:
        return {
            "silent": last_seen is None or now - last_seen > SILENT_SECONDS,
            "version": "",
            "lists_updated": None,
            "lists_stale": False,
            "dropped": None,
        }
    return {
        "silent": not health.reporting(now),
        "version": health.version,
        "lists_updated": health.lists_updated,
        # The agent knows each source's update interval; it counts those overdue.
        "lists_stale": bool(health.stale),
        "dropped": health.dropped,
    }


@dataclass(frozen=True)
class DailyTotals:
    """The last few local days' totals, as the overview and the AI use page chart them."""

    first_day: float  # the start of the first local day
    days: list[tuple[float, dict[str, int]]]  # by_local_day's

    @property
    def since(self) -> float:
        """The start of the hour the counts were read from."""
        return hour_of(self.first_day)

    def total(self, name: str) -> int:
        return sum(sums.get(name, 0) for _, sums in self.days)


async def daily_totals(
    ctx: WebContext, t: Translator, sites: Sequence[int], days: int, now: float, category: str = ""
) -> DailyTotals:
    """Queries, blocked and alerts per local day over the ``days`` up to ``now`` (today
    included), of one category or all."""
    first_day = local_days(t, now - (days - 1) * DAY, now)[0]
    hourly = await ctx.run(
        ctx.queries.totals, sites, hour_of(first_day), None, ("hour",), "", category
    )
    return DailyTotals(first_day, by_local_day(t, hourly, first_day, now))


def day_chart(
    t: Translator,
    daily: DailyTotals,
    caption: str,
    empty: str,
    bar_title: str,
) -> Markup:
    """Days as bars (``by_local_day``'s), queries with the blocked part darker; ``bar_title``
    is the untranslated message of each bar's title, with ``day``, ``queries``, ``blocked``."""
    return _charts.bars(
        [
            _charts.Bar(
                label=t.short_day(start),
                total=sums.get("queries", 0),
                part=sums.get("blocked", 0),
                title=t.gettext(
                    bar_title,
                    day=t.day(start),
                    queries=t.number(sums.get("queries", 0)),
                    blocked=t.number(sums.get("blocked", 0)),
                ),
            )
            for start, sums in daily.days
        ],
        caption,
        empty,
    )


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


class OverviewPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal, t, site, days, scope = await ctx.period(request, PERIODS, "7")
        now = time.time()
        daily = await daily_totals(ctx, t, scope.ids, days, now)
        since = daily.since
        categories = await ctx.run(ctx.queries.totals, scope.ids, since, None, ("category",))
        per_site = {
            r["site_id"]: r
            for r in await ctx.run(ctx.queries.totals, scope.ids, since, None, ("site_id",))
        }
        top_names = [
            {**n, "category": ctx.category_name(t, n["category"])}
            for n in await ctx.run(ctx.queries.top_blocked, scope.ids, day_of(since), None, TOP)
        ]
        alerts = (
            await ctx.run(ctx.reviews.alert_counts, scope.ids, now - OPEN_ALERT_DAYS * DAY)
            if principal.can(Permission.ALERTS)
            else None
        )
        devices = (
            await ctx.run(ctx.reviews.device_counts, scope.ids)
            if principal.can(Permission.DEVICES)
            else None
        )
        pending = (
            await ctx.run(ctx.queries.pending_requests, scope.ids)
            if principal.can(Permission.REQUESTS)
            else None
        )
        sites = await ctx.run(ctx.queries.sites)
        health = await ctx.run(ctx.agents.health, scope.ids)
        queries, blocked = daily.total("queries"), daily.total("blocked")
        chart = day_chart(
            t,
            daily,
            t.gettext("DNS queries a day, the blocked part darker"),
            t.gettext("No queries in this period."),
            # Not a gettext call: the message is looked up per day by day_chart.
            N_("%(day)s: %(queries)s queries, %(blocked)s blocked"),
        )
        top_categories = [
            {
                "id": r["category"],
                "name": ctx.category_name(t, r["category"]) or t.gettext("(no category)"),
                "queries": r["queries"],
                "blocked": r["blocked"],
                "alerts": r["alerts"],
                "meter": _charts.meter(
                    share(r["queries"], queries), t.percent(share(r["queries"], queries))
                ),
            }
            for r in categories
            if r["category"]
        ][:TOP]
        schools = [
            {
                "name": s["name"],
                "last_seen": s["last_seen"],
                **agent_health(health.get(s["id"]), s["last_seen"], now),
                "queries": per_site.get(s["id"], {}).get("queries", 0),
                "blocked_share": share(
                    per_site.get(s["id"], {}).get("blocked", 0),
                    per_site.get(s["id"], {}).get("queries", 0),
                ),
                "open_alerts": (alerts or {}).get(s["id"], {}).get("open", 0),
                "new_devices": (devices or {}).get(s["id"], {}).get("new", 0),
                "pending": (pending or {}).get(s["id"], 0),
            }
            for s in sites
            if s["id"] in scope.ids
        ]
        return ctx.render.page(
            request,
            "overview.html",
            {
                "site": site,
                "sites": await ctx.site_names(principal),
                "days": str(days),
                "periods": PERIODS,
                "chart": chart,
                "queries": queries,
                "blocked": blocked,
                "blocked_share": share(blocked, queries),
                "open_alerts": sum(a["open"] for a in alerts.values()) if alerts else None,
                "alert_days": OPEN_ALERT_DAYS,
                "new_devices": sum(d["new"] for d in devices.values()) if devices else None,
                "pending": sum(pending.values()) if pending is not None else None,
                "top_categories": top_categories,
                "top_names": top_names,
                "schools": schools,
            },
            principal=principal,
        )


def routes(ctx: WebContext) -> list[Route]:
    return [Route("/", OverviewPage(ctx).show, methods=["GET"])]
