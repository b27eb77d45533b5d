"""District indicators: for each school, how fast its alerts were acknowledged, how many of
its devices are approved, how fresh its lists are, how much of the time its agent ran, and
how often somebody tried a way around the filter. Measured by ``indicators``; the page only
lays them side by side, with the district's figures above."""

from __future__ import annotations

import statistics
import time
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.server.indicators import ACK_TARGET, school_indicators
from schoolgate.server.web._context import WebContext
from schoolgate.server.web.overview import DAY

PERIODS: Final = ("30", "90", "365")


class IndicatorsPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal, _, site, days, scope = await ctx.period(request, PERIODS, "30")
        now = time.time()
        since = now - days * DAY
        sites = [s for s in await ctx.run(ctx.queries.sites) if s["id"] in scope.ids]
        found = await ctx.run(school_indicators, ctx.api.queries.engine, sites, since, now)
        rows = [
            {
                "name": scope.names[i.site_id],
                "i": i,
            }
            for i in found
        ]
        uptimes = [i.uptime for i in found if i.uptime is not None]
        acked = [i.median_ack for i in found if i.median_ack is not None]
        devices = sum(i.devices for i in found)
        return ctx.render.page(
            request,
            "indicators.html",
            {
                "site": site,
                "sites": await ctx.site_names(principal),
                "days": str(days),
                "periods": PERIODS,
                "rows": rows,
                "target": ACK_TARGET,
                "district": {
                    "alerts": sum(i.alerts for i in found),
                    "acknowledged": sum(i.acknowledged for i in found),
                    "median_ack": statistics.median(acked) if acked else None,
                    "approved_share": (
                        sum(i.approved for i in found) / devices if devices else None
                    ),
                    "uptime": statistics.mean(uptimes) if uptimes else None,
                    "bypass": sum(i.bypass_events + i.bypass_lookups for i in found),
                },
            },
            principal=principal,
        )


def routes(ctx: WebContext) -> list[Route]:
    return [Route("/indicators", IndicatorsPage(ctx).show, methods=["GET"])]
