"""The alerts inbox: safeguarding alerts, newest first, open ones until somebody records what
was done (an outcome and a note), which closes them for good.

Listing alerts is audited like the API's list; so is each acknowledgement, with the outcome
(the note itself is kept in ``alert_reviews``, not copied into the audit log).
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from schoolgate.server.admin_api import DAY_SECONDS, SEVERITIES
from schoolgate.server.audit import AuditAction
from schoolgate.server.auth import Permission, Principal
from schoolgate.server.errors import ApiError, bad_parameter
from schoolgate.server.params import Params
from schoolgate.server.queries import EVENT_KEY
from schoolgate.server.reviews import (
    ALERT_STATES,
    OUTCOMES,
    AlertFilter,
    AlreadyReviewed,
    ReviewError,
)
from schoolgate.server.web._context import Tabs, WebContext
from schoolgate.server.web._session import with_notice

PAGE_ROWS: Final = 50
DEFAULT_DAYS: Final = 30


class AlertsPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.ALERTS)
        t = ctx.render.translator(request)
        params = Params(
            request,
            ("site", "state", "severity", "group", "since", "until", "cursor", "done"),
            t.zone,
        )
        scope = await ctx.api.scope(principal, params)
        state = params.choice("state", ALERT_STATES)
        since, until = params.span(DEFAULT_DAYS * DAY_SECONDS, time.time())
        found = AlertFilter(
            sites=scope.ids,
            since=since,
            until=until,
            state=state,
            severity=params.choice("severity", SEVERITIES),
            group=params.text("group", 64),
        )
        page = await ctx.run(ctx.reviews.alerts, found, PAGE_ROWS, params.cursor(EVENT_KEY))
        await ctx.run(
            ctx.audit.write,
            principal,
            AuditAction.ALERT_LIST,
            scope.ids,
            {"filters": params.given(), "rows": len(page.rows), "page": "alerts"},
        )
        kept = {
            k: v
            for k in ("site", "severity", "group", "since", "until")
            if (v := params.text(k, 64))
        }
        tabs = Tabs("/alerts", "state", kept)
        return ctx.render.page(
            request,
            "alerts.html",
            {
                "site": params.text("site", 64),
                "sites": await ctx.site_names(principal),
                "state": state,
                "severity": found.severity,
                "severities": SEVERITIES,
                "group": found.group,
                "tabs": tabs.links((*ALERT_STATES, "")),
                "rows": [
                    {
                        **r,
                        "site": scope.names.get(r["site_id"], ""),
                        "when": t.when(r["time"]),
                        "reviewed_when": t.when(r["reviewed"]),
                        "category_name": ctx.category_name(t, r["category"]),
                        "time_key": repr(r["time"]),
                    }
                    for r in page.rows
                ],
                "outcomes": OUTCOMES,
                "done": params.text("done", 32),
                "next_link": tabs.next_link(state, page.next),
                "days": DEFAULT_DAYS,
            },
            principal=principal,
        )

    async def acknowledge(self, request: Request) -> Response:
        ctx = self.ctx
        principal, form = await ctx.web.form(request, Permission.ACKNOWLEDGE_ALERTS)
        site_id, seq, when = await self._alert_key(principal, form)
        try:
            review: dict[str, Any] = await ctx.run(
                ctx.reviews.acknowledge,
                site_id,
                seq,
                when,
                form.get("outcome", ""),
                form.get("note", ""),
                principal.name,
            )
        except ReviewError as exc:
            raise ApiError(409 if isinstance(exc, AlreadyReviewed) else 400, str(exc)) from None
        await ctx.run(
            ctx.audit.write,
            principal,
            AuditAction.ALERT_REVIEW,
            (site_id,),
            {"seq": seq, "time": when, "outcome": review["outcome"]},
        )
        return RedirectResponse(
            with_notice(form.get("back", "/alerts"), "acknowledged"), status_code=303
        )

    async def _alert_key(
        self, principal: Principal, form: dict[str, str]
    ) -> tuple[int, int, float]:
        found = await self.ctx.form_site(principal, form.get("site", ""))
        try:
            seq = int(form.get("seq", ""))
            when = float(form.get("time", ""))
        except ValueError:
            raise bad_parameter("seq", "the alert's key is not whole") from None
        if not math.isfinite(when):
            raise bad_parameter("time", "not a time")
        return found, seq, when


def routes(ctx: WebContext) -> list[Route]:
    page = AlertsPage(ctx)
    return [
        Route("/alerts", page.show, methods=["GET"]),
        Route("/alerts/acknowledge", page.acknowledge, methods=["POST"]),
    ]
