"""The devices of each school: new ones first, until somebody approves them (the school's)
or marks them known (somebody else's, seen and accepted).

A device is what the agent saw by address and MAC (``devices``, kept up by ingest); the review
lives beside it (``device_reviews``), and every review is written to the audit log.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from schoolgate.server.audit import AuditAction
from schoolgate.server.auth import Permission
from schoolgate.server.errors import ApiError
from schoolgate.server.params import Params
from schoolgate.server.reviews import DEVICE_STATES, ReviewError
from schoolgate.server.web._context import Tabs, WebContext
from schoolgate.server.web._session import with_notice

PAGE_ROWS: Final = 100
# The cursor of this list: new first (1, then 0), last seen, site, address, MAC.
DEVICE_REVIEW_KEY: Final = (int, float, int, str, str)


class DevicesPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.DEVICES)
        t = ctx.render.translator(request)
        params = Params(request, ("site", "state", "cursor", "done"), t.zone)
        scope = await ctx.api.scope(principal, params)
        state = params.choice("state", DEVICE_STATES)
        page = await ctx.run(
            ctx.reviews.devices, scope.ids, state, PAGE_ROWS, params.cursor(DEVICE_REVIEW_KEY)
        )
        counts = await ctx.run(ctx.reviews.device_counts, scope.ids)
        totals = {
            name: sum(c[name] for c in counts.values())
            for name in ("devices", "new", "approved", "known")
        }
        site = params.text("site", 64)
        tabs = Tabs("/devices", "state", {"site": site} if site else {})
        return ctx.render.page(
            request,
            "devices.html",
            {
                "site": site,
                "sites": await ctx.site_names(principal),
                "state": state,
                "totals": totals,
                "tabs": tabs.links((*DEVICE_STATES, "")),
                "rows": [
                    {
                        **d,
                        "site": scope.names.get(d["site_id"], ""),
                        "first": t.when(d["first_seen"]),
                        "last": t.when(d["last_seen"]),
                        "reviewed_when": t.when(d["reviewed"]),
                    }
                    for d in page.rows
                ],
                "done": params.text("done", 32),
                "next_link": tabs.next_link(state, page.next),
            },
            principal=principal,
        )

    async def review(self, request: Request) -> Response:
        ctx = self.ctx
        principal, form = await ctx.web.form(request, Permission.APPROVE_DEVICES)
        site_id = await ctx.form_site(principal, form.get("site", ""))
        status = form.get("status", "")
        try:
            await ctx.run(
                ctx.reviews.review_device,
                site_id,
                form.get("client_ip", ""),
                form.get("mac", ""),
                status,
                form.get("note", ""),
                principal.name,
            )
        except ReviewError as exc:
            raise ApiError(400, str(exc)) from None
        await ctx.run(
            ctx.audit.write,
            principal,
            AuditAction.DEVICE_REVIEW,
            (site_id,),
            {"client_ip": form.get("client_ip", ""), "mac": form.get("mac", ""), "status": status},
        )
        return RedirectResponse(with_notice(form.get("back", "/devices"), status), 303)


def routes(ctx: WebContext) -> list[Route]:
    page = DevicesPage(ctx)
    return [
        Route("/devices", page.show, methods=["GET"]),
        Route("/devices/review", page.review, methods=["POST"]),
    ]
