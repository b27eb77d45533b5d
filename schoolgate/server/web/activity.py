"""Activity search: who looked up what, when, and what the filter did, by school, device
(address, MAC or name), group, name, category, action and time; a page at a time, newest
first, with a CSV export of the same search.

The form is the JSON API's search (``AdminApi.event_filter``) with the same parameters,
permissions and audit, so the page and the API never disagree about what a search means.
Times typed into the form are the school's local time; the export link carries them as
absolute times, so the file holds exactly what the page showed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.policy.decision import Action
from schoolgate.server.admin_api import DAY_SECONDS, EVENT_FILTERS
from schoolgate.server.audit import AuditAction
from schoolgate.server.auth import Permission
from schoolgate.server.params import Params
from schoolgate.server.queries import EVENT_KEY, encode_cursor
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._i18n import Translator

PAGE_ROWS: Final = 50
ACTIONS: Final = tuple(a.value for a in Action)
KINDS: Final = tuple(k.value for k in EventKind)


def local_input(t: Translator, seconds: float | None) -> str:
    """A moment as a ``datetime-local`` field shows it, in the collector's zone."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, t.zone).strftime("%Y-%m-%dT%H:%M")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class ActivityPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.EVENTS)
        t = ctx.render.translator(request)
        params = Params(request, (*EVENT_FILTERS, "cursor"), t.zone)
        scope = await ctx.api.scope(principal, params)
        found = ctx.api.event_filter(principal, params, scope)
        page = await ctx.run(ctx.queries.events, found, PAGE_ROWS, params.cursor(EVENT_KEY))
        await ctx.run(
            ctx.audit.write,
            principal,
            AuditAction.EVENT_SEARCH,
            scope.ids,
            {"filters": params.given(), "rows": len(page.rows), "page": "activity"},
        )
        asked = {n: params.text(n) for n in EVENT_FILTERS if n not in ("since", "until")}
        absolute = {
            **{k: v for k, v in asked.items() if v},
            "since": iso(found.since) if found.since is not None else "",
            "until": iso(found.until) if found.until is not None else "",
        }
        absolute = {k: v for k, v in absolute.items() if v}
        next_link = (
            "/activity?" + urlencode({**absolute, "cursor": encode_cursor(page.next)})
            if page.next is not None
            else None
        )
        return ctx.render.page(
            request,
            "activity.html",
            {
                "form": {
                    **asked,
                    "since": local_input(t, found.since),
                    "until": local_input(t, found.until),
                },
                "sites": await ctx.site_names(principal),
                "categories": sorted(
                    ((c.id, c.name(t.language)) for c in ctx.taxonomy), key=lambda c: c[1]
                ),
                "actions": ACTIONS,
                "kinds": [
                    k for k in KINDS if k != EventKind.ALERT or principal.can(Permission.ALERTS)
                ],
                "rows": [self._row(t, r, scope.names) for r in page.rows],
                "next_link": next_link,
                "first_link": "/activity?" + urlencode(absolute) if params.text("cursor") else None,
                "export_link": "/activity.csv?" + urlencode(absolute)
                if principal.can(Permission.EXPORT)
                else None,
                "default_hours": int(DAY_SECONDS // 3_600),
            },
            principal=principal,
        )

    def _row(self, t: Translator, row: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
        return {
            **row,
            "site": names.get(row["site_id"], ""),
            "when": t.when(row["time"]),
            "category_name": self.ctx.category_name(t, row["category"]),
        }

    async def export(self, request: Request) -> Response:
        """The CSV of a search: the API's export, for a signed-in browser."""
        await self.ctx.web.require(request, Permission.EXPORT)
        return await self.ctx.api.export(request)


def routes(ctx: WebContext) -> list[Route]:
    page = ActivityPage(ctx)
    return [
        Route("/activity", page.show, methods=["GET"]),
        Route("/activity.csv", page.export, methods=["GET"]),
    ]
