"""What every admin page handler shares: the stores, the renderer and the signed-in user's
scope, and the one way a page runs database work (in a worker thread, within the collector's
limit, a failure turned into a 503 page)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple, Unpack

import anyio

from schoolgate.agent.policy.categories import Taxonomy, bundled
from schoolgate.server.admin_api import AdminApi, Scope
from schoolgate.server.audit import AuditLog
from schoolgate.server.auth import Principal
from schoolgate.server.errors import in_thread
from schoolgate.server.policies import PolicyStore
from schoolgate.server.queries import EventQueries
from schoolgate.server.reviews import Reviews
from schoolgate.server.sessions import Sessions
from schoolgate.server.web._i18n import Translator
from schoolgate.server.web._render import Renderer
from schoolgate.server.web._session import WebAuth

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


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

    async def run(self, work: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        return await in_thread(self.limiter, work, *args)

    async def scope(self, principal: Principal, site: str) -> Scope:
        """The sites a page covers: the one chosen (``site``, a name), or every site the
        principal sees; a site they do not see is a 403."""
        sites = await self.run(self.queries.sites)
        return Scope(principal, sites, [site] if site else [])

    def category_name(self, t: Translator, category_id: str) -> str:
        if category_id in self.taxonomy:
            return self.taxonomy[category_id].name(t.language)
        return category_id


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
    )
