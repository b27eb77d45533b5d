"""Generative AI use: how often the schools' groups and devices looked up AI tools (the
``genai`` category), how much of it was blocked, day by day: the evidence a school leader
writing an AI policy needs, measured rather than guessed.

Days and groups come from ``event_counts``; devices from ``category_use``, kept per device
and day at ingest. Devices are shown only to those who may see devices; everyone who sees the
overview sees the groups and the days.
"""

from __future__ import annotations

import time
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.server.auth import Permission
from schoolgate.server.rollups import day_of
from schoolgate.server.web import _charts
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._labels import N_
from schoolgate.server.web.overview import (
    PERIODS,
    daily_totals,
    day_chart,
    share,
)

CATEGORY: Final = "genai"
DEVICES: Final = 50
NAMES: Final = 10


class AiUsePage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal, t, site, days, scope = await ctx.period(request, PERIODS, "30")
        now = time.time()
        daily = await daily_totals(ctx, t, scope.ids, days, now, CATEGORY)
        since = daily.since
        groups = await ctx.run(ctx.queries.totals, scope.ids, since, None, ("grp",), "", CATEGORY)
        everything = await ctx.run(ctx.queries.totals, scope.ids, since, None, ())
        all_queries = everything[0]["queries"] if everything else 0
        queries, blocked = daily.total("queries"), daily.total("blocked")
        devices = None
        device_count = None
        if principal.can(Permission.DEVICES):
            device_count, found = await ctx.run(
                ctx.queries.category_use, scope.ids, CATEGORY, day_of(since), None, DEVICES
            )
            devices = [
                {
                    **d,
                    "site": scope.names.get(d["site_id"], ""),
                    "last_when": t.when(d["last_seen"]),
                    "blocked_share": share(d["blocked"], d["queries"]),
                }
                for d in found
            ]
        chart = day_chart(
            t,
            daily,
            t.gettext("Lookups of AI tools a day, the blocked part darker"),
            t.gettext("No lookups of AI tools in this period."),
            N_("%(day)s: %(queries)s lookups of AI tools, %(blocked)s blocked"),
        )
        return ctx.render.page(
            request,
            "ai_use.html",
            {
                "site": site,
                "sites": await ctx.site_names(principal),
                "days": str(days),
                "periods": PERIODS,
                "chart": chart,
                "queries": queries,
                "blocked": blocked,
                "blocked_share": share(blocked, queries),
                "of_all": share(queries, all_queries),
                "groups": [
                    {
                        "name": g["grp"],
                        "queries": g["queries"],
                        "blocked": g["blocked"],
                        "blocked_share": share(g["blocked"], g["queries"]),
                        "meter": _charts.meter(
                            share(g["queries"], queries), t.percent(share(g["queries"], queries))
                        ),
                    }
                    for g in groups
                    if g["queries"]
                ],
                "devices": devices,
                "device_count": device_count,
                "top_blocked": await ctx.run(
                    ctx.queries.top_blocked, scope.ids, day_of(since), None, NAMES, CATEGORY
                ),
                "category_name": ctx.category_name(t, CATEGORY),
                # The activity search a device's row links to covers the same days.
                "since": int(daily.first_day),
            },
            principal=principal,
        )


def routes(ctx: WebContext) -> list[Route]:
    return [Route("/ai-use", AiUsePage(ctx).show, methods=["GET"])]
