"""What every admin page handler shares: the stores, the renderer and the signed-in user's
scope, and the one way a page runs database work (in a worker thread, within the collector's
limit, a failure turned into a 503 page)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar, TypeVarTuple, Unpack
from urllib.parse import urlencode

import anyio
from starlette.requests import Request

from schoolgate.agent.policy.categories import Taxonomy, bundled
from schoolgate.server.admin_api import AdminApi, Scope
from schoolgate.server.agent_status import AgentStatuses
from schoolgate.server.audit import AuditLog
from schoolgate.server.auth import Permission, Principal
from schoolgate.server.errors import ApiError, in_thread
from schoolgate.server.params import Params
from schoolgate.server.policies import PolicyStore
from schoolgate.server.queries import EventQueries, Key, encode_cursor
from schoolgate.server.reviews import Reviews
from schoolgate.server.sessions import Sessions
from schoolgate.server.web._i18n import Translator
from schoolgate.server.web._render import Renderer
from schoolgate.server.web._session import WebAuth

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class PeriodView(NamedTuple):
    """A page of figures over the last ``days``, for ``site`` (or every site: "")."""

    principal: Principal
    t: Translator
    site: str
    days: int
    scope: Scope


@dataclass
class WebContext:
    web: WebAuth
    render: Renderer
    limiter: anyio.CapacityLimiter
    queries: EventQueries
    reviews: Reviews
    policies: PolicyStore
    audit: AuditLog
    api: AdminApi
    sessions: Sessions
    session_seconds: float
    taxonomy: Taxonomy
    agents: AgentStatuses

    async def run(self, work: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        return await in_thread(self.limiter, work, *args)

    async def period(self, request: Request, periods: Sequence[str], default: str) -> PeriodView:
        """What a page of figures over the last days is asked for: the signed-in user (who
        may see statistics), one school (``site``) or all they see, and ``days`` among
        ``periods``."""
        principal = await self.web.require(request, Permission.STATS)
        t = self.render.translator(request)
        params = Params(request, ("site", "days"), t.zone)
        site = params.text("site", 64)
        days = int(params.choice("days", periods) or default)
        return PeriodView(principal, t, site, days, await self.scope(principal, site))

    async def scope(self, principal: Principal, site: str) -> Scope:
        """The sites a page covers: the one chosen (``site``, a name), or every site the
        principal sees; a site they do not see is a 403."""
        sites = await self.run(self.queries.sites)
        return Scope(principal, sites, [site] if site else [])

    async def site_names(self, principal: Principal) -> list[str]:
        """The names of the sites ``principal`` sees, for a page's school chooser."""
        sites = await self.run(self.queries.sites)
        return [s["name"] for s in sites if principal.sees(s["id"])]

    async def form_site(self, principal: Principal, name: str) -> int:
        """The id of the site a form names, if ``principal`` sees it; a 403 otherwise (the
        same for a site that does not exist, so names cannot be probed)."""
        sites = await self.run(self.queries.sites)
        found = next((s["id"] for s in sites if s["name"] == name), None)
        if found is None or not principal.sees(found):
            raise ApiError(403, f"site {name!r} is not one of the sites you may see")
        return int(found)

    def category_name(self, t: Translator, category_id: str) -> str:
        if category_id in self.taxonomy:
            return self.taxonomy[category_id].name(t.language)
        return category_id


@dataclass(frozen=True)
class Tabs:
    """A list page's tabs, one per value of ``param``, keeping the page's other filters
    (``kept``); and the link to the page after the current one."""

    path: str
    param: str
    kept: Mapping[str, str]

    def links(self, values: Sequence[str]) -> list[tuple[str, str]]:
        """(value, link) for each tab; the value "" is the tab without the filter."""
        return [
            (v, self.path + "?" + urlencode({**self.kept, self.param: v} if v else self.kept))
            for v in values
        ]

    def next_link(self, current: str, after: Key | None) -> str | None:
        if after is None:
            return None
        chosen = {**self.kept, self.param: current} if current else dict(self.kept)
        return self.path + "?" + urlencode({**chosen, "cursor": encode_cursor(after)})


def make_context(
    web: WebAuth,
    render: Renderer,
    limiter: anyio.CapacityLimiter,
    api: AdminApi,
    policies: PolicyStore,
    sessions: Sessions,
    session_seconds: float,
) -> WebContext:
    engine = api.queries.engine
    return WebContext(
        web=web,
        render=render,
        limiter=limiter,
        queries=api.queries,
        reviews=Reviews(engine),
        policies=policies,
        audit=api.audit,
        api=api,
        sessions=sessions,
        session_seconds=session_seconds,
        taxonomy=bundled(),
        agents=AgentStatuses(engine),
    )
