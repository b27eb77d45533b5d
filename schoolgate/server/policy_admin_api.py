"""The people's side of the central policy: documents, exceptions and decisions on unblock
requests, for signed-in users (see ``auth`` for the roles).

| route | permission |
|---|---|
| ``GET /api/v1/policies/district`` and ``.../history`` | site-policy |
| ``PUT /api/v1/policies/district`` | district-policy |
| ``GET``, ``PUT /api/v1/policies/sites/{site}``, ``.../history`` | site-policy |
| ``GET``, ``POST /api/v1/sites/{site}/exceptions`` | site-policy |
| ``DELETE /api/v1/sites/{site}/exceptions/{id}`` | site-policy |
| ``POST /api/v1/requests/{site}/{id}/decision`` | decide-requests |

Every route naming a site needs the user to see that site. A change is made in the user's
name and needs a reason (kept with the revision, exception or decision); every change is also
written to the audit log before the answer goes.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import anyio
import msgspec
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schoolgate.agent.policy.exceptions import parse_duration
from schoolgate.server.audit import AuditAction, AuditLog
from schoolgate.server.auth import Permission, Principal, require
from schoolgate.server.errors import ApiError, in_thread
from schoolgate.server.policies import PolicyError, PolicyStore, Revision
from schoolgate.server.repository import SiteRef

MAX_BODY: Final = 512 * 1024
T = TypeVar("T")


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    reason: str


class _Grant(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    group: str
    duration: str
    reason: str
    action: str = "allow"
    device: str = ""  # a MAC or IP address: the exception is for this device of the group


class _Decision(msgspec.Struct, forbid_unknown_fields=True):
    approve: bool
    note: str
    duration: str = ""
    group: str | None = None
    for_device: bool = False  # the requesting device alone, not its whole group


def _revision(rev: Revision | None) -> dict[str, Any] | None:
    if rev is None:
        return None
    return {
        "id": rev.id,
        "text": rev.text,
        "created": rev.created,
        "author": rev.author,
        "reason": rev.reason,
    }


def _seconds(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ApiError(400, f"duration {text!r}: {exc}") from None


async def _body(request: Request, shape: type[T]) -> T:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the body is over {MAX_BODY:,} bytes")
    try:
        return msgspec.json.decode(raw, type=shape)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the body: {exc}") from None


class PolicyAdminApi:
    def __init__(self, engine: Engine, limiter: anyio.CapacityLimiter) -> None:
        self.store = PolicyStore(engine)
        self.audit = AuditLog(engine)
        self.limiter = limiter

    async def _site(self, principal: Principal, name: str) -> SiteRef:
        site = await in_thread(self.limiter, self.store.site_named, name)
        if site is None or not principal.sees(site.id):
            # The same answer for a school that does not exist and one not the user's.
            raise ApiError(403, f"site {name!r} is not one of the sites you may see")
        return site

    async def _audit(
        self, principal: Principal, action: AuditAction, site: SiteRef | None, detail: Any
    ) -> None:
        sites = [] if site is None else [site.id]
        await in_thread(self.limiter, self.audit.write, principal, action, sites, detail)

    async def _change(self, work: Any, *args: Any) -> Any:
        try:
            return await in_thread(self.limiter, work, *args)
        except PolicyError as exc:
            raise ApiError(422, str(exc)) from None

    # --- documents --------------------------------------------------------------------------

    async def district(self, request: Request) -> Response:
        await require(request, Permission.SITE_POLICY)
        current = await in_thread(self.limiter, self.store.current, None)
        return JSONResponse({"revision": _revision(current)})

    async def put_district(self, request: Request) -> Response:
        principal = await require(request, Permission.DISTRICT_POLICY)
        doc = await _body(request, _Document)
        await self._audit(principal, AuditAction.POLICY_CHANGE, None, {"scope": "district"})
        rev = await self._change(self.store.save, None, doc.text, principal.name, doc.reason)
        return JSONResponse({"revision": _revision(rev)}, status_code=201)

    async def site_policy(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        site = await self._site(principal, request.path_params["site"])
        current = await in_thread(self.limiter, self.store.current, site.id)
        body, etag = await in_thread(self.limiter, self.store.for_agent, site)
        return JSONResponse(
            {
                "site": site.name,
                "revision": _revision(current),
                "effective": msgspec.json.decode(body),
                "etag": etag,
            }
        )

    async def put_site_policy(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        site = await self._site(principal, request.path_params["site"])
        doc = await _body(request, _Document)
        await self._audit(principal, AuditAction.POLICY_CHANGE, site, {"scope": site.name})
        rev = await self._change(self.store.save, site, doc.text, principal.name, doc.reason)
        return JSONResponse({"revision": _revision(rev)}, status_code=201)

    async def history(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        name = request.path_params.get("site")
        site = None if name is None else await self._site(principal, name)
        found = await in_thread(
            self.limiter, self.store.history, None if site is None else site.id, 200
        )
        return JSONResponse({"revisions": [_revision(rev) for rev in found]})

    # --- exceptions -------------------------------------------------------------------------

    async def exceptions(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        site = await self._site(principal, request.path_params["site"])
        found = await in_thread(self.limiter, self.store.live_exceptions, site.id)
        return JSONResponse({"exceptions": [x.for_agent() for x in found]})

    async def grant(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        site = await self._site(principal, request.path_params["site"])
        asked = await _body(request, _Grant)
        seconds = _seconds(asked.duration)
        await self._audit(
            principal,
            AuditAction.EXCEPTION_GRANT,
            site,
            {
                "name": asked.name,
                "group": asked.group,
                "device": asked.device,
                "action": asked.action,
                "for": seconds,
            },
        )
        granted = await self._change(
            self.store.grant,
            site,
            asked.name,
            asked.group,
            asked.action,
            seconds,
            asked.reason,
            principal.name,
            None,
            asked.device,
        )
        return JSONResponse({"exception": granted.for_agent()}, status_code=201)

    async def revoke(self, request: Request) -> Response:
        principal = await require(request, Permission.SITE_POLICY)
        site = await self._site(principal, request.path_params["site"])
        exception_id = request.path_params["id"]
        await self._audit(principal, AuditAction.EXCEPTION_REVOKE, site, {"id": exception_id})
        went = await in_thread(self.limiter, self.store.revoke, site, exception_id, principal.name)
        if not went:
            raise ApiError(404, f"no exception {exception_id} in force at {site.name}")
        return Response(status_code=204)

    # --- unblock requests -------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        principal = await require(request, Permission.DECIDE_REQUESTS)
        site = await self._site(principal, request.path_params["site"])
        request_id = request.path_params["id"]
        asked = await _body(request, _Decision)
        seconds = _seconds(asked.duration) if asked.approve else 0
        await self._audit(
            principal,
            AuditAction.REQUEST_DECISION,
            site,
            {
                "request": request_id,
                "approve": asked.approve,
                "for": seconds,
                "for_device": asked.for_device,
            },
        )
        decision = await self._change(
            self.store.decide,
            site,
            request_id,
            asked.approve,
            principal.name,
            asked.note,
            seconds,
            asked.group,
            asked.for_device,
        )
        return JSONResponse(
            {
                "request": decision.request_id,
                "status": decision.status,
                "exception": decision.exception.for_agent() if decision.exception else None,
            }
        )


def policy_admin_routes(engine: Engine, limiter: anyio.CapacityLimiter) -> list[Route]:
    api = PolicyAdminApi(engine, limiter)
    return [
        Route("/api/v1/policies/district", api.district, methods=["GET"]),
        Route("/api/v1/policies/district", api.put_district, methods=["PUT"]),
        Route("/api/v1/policies/district/history", api.history, methods=["GET"]),
        Route("/api/v1/policies/sites/{site}", api.site_policy, methods=["GET"]),
        Route("/api/v1/policies/sites/{site}", api.put_site_policy, methods=["PUT"]),
        Route("/api/v1/policies/sites/{site}/history", api.history, methods=["GET"]),
        Route("/api/v1/sites/{site}/exceptions", api.exceptions, methods=["GET"]),
        Route("/api/v1/sites/{site}/exceptions", api.grant, methods=["POST"]),
        Route("/api/v1/sites/{site}/exceptions/{id}", api.revoke, methods=["DELETE"]),
        Route("/api/v1/requests/{site}/{id}/decision", api.decide, methods=["POST"]),
    ]
