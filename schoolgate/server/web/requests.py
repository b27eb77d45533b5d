"""Unblock requests sent from the schools' block pages: approve one for the device that asked
or for its whole group, for a while, or refuse it with a reason. An approval is a central
exception, which the school's agent takes with its next policy poll (within a minute); the
reason is kept with the decision.

The decision is the policy API's (``PolicyStore.decide``), audited the same way.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from schoolgate.agent.policy.exceptions import parse_duration
from schoolgate.server.admin_api import STATUSES
from schoolgate.server.audit import AuditAction
from schoolgate.server.auth import Permission
from schoolgate.server.errors import ApiError
from schoolgate.server.params import Params
from schoolgate.server.policies import PolicyError
from schoolgate.server.queries import REQUEST_KEY
from schoolgate.server.web._context import Tabs, WebContext
from schoolgate.server.web._labels import N_
from schoolgate.server.web._session import with_notice

PAGE_ROWS: Final = 50
# How long an approval lasts, as the form offers it (parse_duration's spelling).
DURATIONS: Final = (
    ("1h", N_("1 hour")),
    ("1d", N_("1 day")),
    ("1w", N_("1 week")),
    ("4w", N_("4 weeks")),
    ("52w", N_("1 year")),
)


class RequestsPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.REQUESTS)
        t = ctx.render.translator(request)
        params = Params(request, ("site", "status", "cursor", "done"), t.zone)
        scope = await ctx.api.scope(principal, params)
        status = params.choice("status", STATUSES)
        page = await ctx.run(
            ctx.queries.requests, scope.ids, status, PAGE_ROWS, params.cursor(REQUEST_KEY)
        )
        site = params.text("site", 64)
        tabs = Tabs("/requests", "status", {"site": site} if site else {})
        return ctx.render.page(
            request,
            "requests.html",
            {
                "site": site,
                "sites": await ctx.site_names(principal),
                "status": status,
                "tabs": tabs.links((*STATUSES, "")),
                "rows": [
                    {
                        **r,
                        "site": scope.names.get(r["site_id"], ""),
                        "when": t.when(r["created"]),
                        "decided_when": t.when(r["decided"]),
                        "category_name": ctx.category_name(t, r["category"]),
                    }
                    for r in page.rows
                ],
                "durations": DURATIONS,
                "done": params.text("done", 32),
                "next_link": tabs.next_link(status, page.next),
            },
            principal=principal,
        )

    async def decide(self, request: Request) -> Response:
        ctx = self.ctx
        principal, form = await ctx.web.form(request, Permission.DECIDE_REQUESTS)
        name = form.get("site", "")
        await ctx.form_site(principal, name)
        site = await ctx.run(ctx.policies.site_named, name)
        if site is None:
            raise ApiError(403, f"site {name!r} is not one of the sites you may see")
        approve = form.get("decision") == "approve"
        if form.get("decision") not in ("approve", "refuse"):
            raise ApiError(400, "decision: approve or refuse")
        seconds = 0
        for_device = False
        if approve:
            try:
                seconds = parse_duration(form.get("duration", ""))
            except ValueError as exc:
                raise ApiError(400, f"duration: {exc}") from None
            # Asked for every time: a default here would widen or narrow a decision unseen.
            if form.get("scope") not in ("device", "group"):
                raise ApiError(400, "scope: device or group")
            for_device = form.get("scope") == "device"
        request_id = form.get("id", "")
        group = form.get("group", "").strip() or None
        await ctx.run(
            ctx.audit.write,
            principal,
            AuditAction.REQUEST_DECISION,
            (site.id,),
            {
                "request": request_id,
                "approve": approve,
                "for": seconds,
                "group": group,
                "for_device": for_device,
            },
        )
        try:
            decision = await ctx.run(
                ctx.policies.decide,
                site,
                request_id,
                approve,
                principal.name,
                form.get("note", ""),
                seconds,
                group,
                for_device,
            )
        except PolicyError as exc:
            raise ApiError(422, str(exc)) from None
        return RedirectResponse(with_notice(form.get("back", "/requests"), decision.status), 303)


def routes(ctx: WebContext) -> list[Route]:
    page = RequestsPage(ctx)
    return [
        Route("/requests", page.show, methods=["GET"]),
        Route("/requests/decide", page.decide, methods=["POST"]),
    ]
