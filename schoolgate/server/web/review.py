"""The annual review report of one school: printable HTML (``/review``) and CSV
(``/review.csv``), both from ``annual_review.gather`` over the same period, a year up to
today unless ``since`` and ``until`` say otherwise."""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.server.annual_review import Review, csv_lines, gather
from schoolgate.server.auth import Permission, Principal
from schoolgate.server.errors import bad_parameter
from schoolgate.server.params import Params
from schoolgate.server.web._context import WebContext
from schoolgate.server.web.overview import DAY
from schoolgate.server.web.policy import matrix_rows

YEAR: Final = 365 * DAY
PARAMS: Final = ("site", "since", "until")


class ReviewPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def _review(
        self, request: Request, principal: Principal
    ) -> tuple[Review | None, Params, str]:
        ctx = self.ctx
        t = ctx.render.translator(request)
        params = Params(request, PARAMS, t.zone)
        site = params.text("site", 64)
        scope = await ctx.scope(principal, site)
        if not site and len(scope.ids) == 1:
            site = scope.names[scope.ids[0]]
        if not site:
            return None, params, site
        now = time.time()
        since, until = params.span(YEAR, now)
        row = next(s for s in await ctx.run(ctx.queries.sites) if s["name"] == site)
        review = await ctx.run(
            gather, ctx.queries, ctx.policies, row, since, until or now, t.language
        )
        return review, params, site

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.STATS)
        t = ctx.render.translator(request)
        review, params, site = await self._review(request, principal)
        context: dict[str, Any] = {
            "site": site,
            "sites": await ctx.site_names(principal),
            "review": review,
        }
        if review is not None:
            kept = {"site": site, **{k: v for k in ("since", "until") if (v := params.text(k))}}
            context.update(
                {
                    "rows": matrix_rows(ctx, t, review.matrix) if review.matrix else [],
                    "csv_link": "/review.csv?" + urlencode(kept),
                    "generated": time.time(),
                    "alerts": [
                        {**a, "category_name": ctx.category_name(t, a["category"])}
                        for a in review.alerts
                    ],
                }
            )
        return ctx.render.page(request, "review.html", context, principal=principal)

    async def export(self, request: Request) -> Response:
        principal = await self.ctx.web.require(request, Permission.STATS)
        review, _params, _site = await self._review(request, principal)
        if review is None:
            raise bad_parameter("site", "the review is of one school: name it")
        day = time.strftime("%Y-%m-%d", time.gmtime(review.until))
        return Response(
            csv_lines(review),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="schoolgate-review-{day}.csv"'},
        )


def routes(ctx: WebContext) -> list[Route]:
    page = ReviewPage(ctx)
    return [
        Route("/review", page.show, methods=["GET"]),
        Route("/review.csv", page.export, methods=["GET"]),
    ]
