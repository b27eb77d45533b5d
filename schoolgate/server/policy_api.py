"""The agents' side of the central policy: ``GET /api/v1/policy`` and ``POST /api/v1/requests``.

Both take the site's bearer token, like ``POST /api/v1/events``, and act only for the token's
site.

``GET /api/v1/policy`` answers the effective policy (the district's with the school's on top),
the live central exceptions and the revisions they came from, with a strong ETag; an agent
that sends the tag back in ``If-None-Match`` gets 304 while nothing changed, so a minute's
poll from every school costs next to nothing.

``POST /api/v1/requests`` takes up to 1,000 unblock requests as JSON
(``{"requests": [...]}``); each is kept once by its id, so an agent resending after a lost
answer doubles nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import msgspec
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from schoolgate.server.errors import ApiError, in_thread, unavailable
from schoolgate.server.policies import MAX_REQUESTS_PER_CALL, PolicyStore
from schoolgate.server.repository import SiteRef

log = logging.getLogger(__name__)

MAX_REQUESTS_BODY: Final = 2 * 1024 * 1024
# The collector's token check: the site a request's bearer token belongs to, or None.
SiteOf = Callable[[Request], Awaitable[SiteRef | None]]


class ShippedRequest(msgspec.Struct, forbid_unknown_fields=False):
    """One unblock request as an agent sends it (``policy_sync``)."""

    id: str
    created: float
    client_ip: str
    group: str
    name: str
    language: str
    mac: str = ""
    hostname: str = ""
    category: str = ""
    reason: str = ""


class _RequestBatch(msgspec.Struct):
    requests: list[ShippedRequest]


_LIMITS: Final = {
    "id": 32,
    "client_ip": 64,
    "group": 64,
    "name": 253,
    "language": 8,
    "mac": 64,
    "hostname": 255,
    "category": 64,
    "reason": 2_000,
}


def _check(request: ShippedRequest, index: int) -> str | None:
    for field, most in _LIMITS.items():
        value = getattr(request, field)
        if len(value) > most:
            return f"requests[{index}].{field}: over {most} characters"
        if "\x00" in value:
            return f"requests[{index}].{field}: holds a NUL"
    if not request.id or not request.name:
        return f"requests[{index}]: an id and a name are needed"
    if not 0 <= request.created < 253_402_300_800:
        return f"requests[{index}].created: not a time"
    return None


class PolicyApi:
    def __init__(
        self, policies: PolicyStore, site_of: SiteOf, limiter: anyio.CapacityLimiter
    ) -> None:
        self.policies = policies
        self._site_of = site_of
        self._threads = limiter

    async def _site(self, request: Request) -> SiteRef:
        try:
            site = await self._site_of(request)
        except SQLAlchemyError as exc:
            raise unavailable(exc) from exc
        if site is None:
            raise ApiError(
                401, "a site's bearer token is needed", {"WWW-Authenticate": 'Bearer realm="api"'}
            )
        return site

    async def get_policy(self, request: Request) -> Response:
        site = await self._site(request)
        body, etag = await in_thread(self._threads, self.policies.for_agent, site)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        wanted = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
        if etag in wanted:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def post_requests(self, request: Request) -> Response:
        site = await self._site(request)
        body = await request.body()
        if len(body) > MAX_REQUESTS_BODY:
            raise ApiError(413, f"the body is over {MAX_REQUESTS_BODY:,} bytes")
        try:
            batch = msgspec.json.decode(body, type=_RequestBatch)
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"not a list of unblock requests: {exc}") from None
        if len(batch.requests) > MAX_REQUESTS_PER_CALL:
            raise ApiError(413, f"over {MAX_REQUESTS_PER_CALL:,} requests in one call")
        for index, item in enumerate(batch.requests):
            problem = _check(item, index)
            if problem is not None:
                raise ApiError(400, problem)
        rows = [msgspec.structs.asdict(item) for item in batch.requests]
        new = await in_thread(self._threads, self.policies.receive_requests, site, rows)
        return JSONResponse({"received": len(rows), "new": new})
