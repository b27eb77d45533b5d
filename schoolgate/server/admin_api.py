"""The admin UI's JSON API: what happened at the sites a user may see.

| endpoint | permission | audited |
|---|---|---|
| ``GET /api/v1/sites`` | stats | |
| ``GET /api/v1/events`` | events | yes |
| ``GET /api/v1/events.csv`` | export | yes |
| ``GET /api/v1/stats/daily`` | stats | |
| ``GET /api/v1/stats/top-blocked`` | stats | |
| ``GET /api/v1/devices`` | devices | |
| ``GET /api/v1/alerts`` | alerts | yes |
| ``GET /api/v1/requests`` | requests | |

Every answer covers the principal's sites only: without a ``site`` parameter, all of them;
a ``site`` they do not see is a 403 (for a user of some sites, a site that does not exist is
the same 403, so names cannot be probed). Lists are newest first, ``limit`` rows a page, with
``next``: the cursor of the next page, or null on the last.

Answers are JSON, never HTML, and are not to be cached: they name pupils' devices.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, TypeVarTuple, Unpack

import anyio
import msgspec
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.server import csv_export
from schoolgate.server.audit import AuditAction, AuditLog
from schoolgate.server.auth import Permission, Principal, require
from schoolgate.server.errors import ApiError, bad_parameter, in_thread
from schoolgate.server.params import Params
from schoolgate.server.queries import (
    DEVICE_KEY,
    EVENT_KEY,
    REQUEST_KEY,
    DeviceFilter,
    EventFilter,
    EventQueries,
    Row,
    encode_cursor,
)
from schoolgate.server.rollups import day_of, hour_of

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000
MAX_EXPORT_ROWS: Final = 1_000_000
EXPORT_PAGE: Final = 5_000
DAY_SECONDS: Final = 86_400.0
KINDS: Final = tuple(k.value for k in EventKind)
SEVERITIES: Final = tuple(s.value for s in Severity)
STATUSES: Final = ("pending", "approved", "refused")
_PAGING: Final = ("limit", "cursor")
EVENT_FILTERS: Final = (
    "site",
    "since",
    "until",
    "client",
    "mac",
    "hostname",
    "group",
    "name",
    "category",
    "action",
    "kind",
)
_NO_STORE: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_decode_json = msgspec.json.Decoder()


def _answer(body: Mapping[str, Any]) -> Response:
    return JSONResponse(body, headers=_NO_STORE)


def _data(text: str) -> Any:
    try:
        return _decode_json.decode(text) if text else {}
    except msgspec.DecodeError:
        return {"unreadable": text}


def _event(row: Row, names: Mapping[int, str]) -> dict[str, Any]:
    return {
        "site": names.get(row["site_id"], ""),
        "seq": row["seq"],
        "time": row["time"],
        "utc": csv_export.iso(row["time"]),
        "kind": row["kind"],
        "client_ip": row["client_ip"],
        "mac": row["mac"],
        "hostname": row["hostname"],
        "group": row["grp"],
        "name": row["name"],
        "qtype": row["qtype"],
        "action": row["action"],
        "category": row["category"],
        "categories": [c for c in row["categories"].split(",") if c],
        "rule": row["rule"],
        "rcode": row["rcode"],
        "latency_ms": row["latency_ms"],
        "cache_hit": row["cache_hit"],
        "severity": row["severity"],
        "data": _data(row["data"]),
    }


class Scope:
    """The sites a request covers: ids to query, and every visible site's name by id."""

    def __init__(self, principal: Principal, sites: list[Row], asked: list[str]) -> None:
        by_name = {s["name"]: s["id"] for s in sites}
        self.names = {s["id"]: s["name"] for s in sites if principal.sees(s["id"])}
        if not asked:
            self.ids = tuple(sorted(self.names))
            return
        chosen: list[int] = []
        for name in asked:
            site_id = by_name.get(name)
            if site_id is not None and principal.sees(site_id):
                chosen.append(site_id)
            elif principal.sites is None:
                raise bad_parameter("site", f"there is no site named {name!r}")
            else:
                raise ApiError(403, f"site {name!r} is not one of the sites you may see")
        self.ids = tuple(sorted(set(chosen)))


class AdminApi:
    def __init__(
        self,
        queries: EventQueries,
        audit: AuditLog,
        limiter: anyio.CapacityLimiter,
        max_export_rows: int = MAX_EXPORT_ROWS,
    ) -> None:
        self.queries = queries
        self.audit = audit
        self.limiter = limiter
        self.max_export_rows = max_export_rows

    async def _run(self, work: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        return await in_thread(self.limiter, work, *args)

    async def scope(self, principal: Principal, params: Params) -> Scope:
        sites = await self._run(self.queries.sites)
        return Scope(principal, sites, params.texts("site", 64))

    async def _audited(
        self,
        principal: Principal,
        action: AuditAction,
        scope: Scope,
        params: Params,
        rows: int,
        **more: Any,
    ) -> None:
        detail = {"filters": params.given(), "rows": rows, **more}
        await self._run(self.audit.write, principal, action, scope.ids, detail)

    # --- sites --------------------------------------------------------------------------------

    async def sites(self, request: Request) -> Response:
        principal = await require(request, Permission.STATS)
        Params(request, ())
        sites = await self._run(self.queries.sites)
        return _answer(
            {
                "sites": [
                    {"name": s["name"], "created": s["created"], "last_seen": s["last_seen"]}
                    for s in sites
                    if principal.sees(s["id"])
                ]
            }
        )

    # --- events -------------------------------------------------------------------------------

    def event_filter(
        self,
        principal: Principal,
        params: Params,
        scope: Scope,
        received_by: float | None = None,
    ) -> EventFilter:
        since, until = params.span(DAY_SECONDS, time.time())
        kind = params.choice("kind", KINDS)
        if principal.can(Permission.ALERTS):
            kinds: tuple[str, ...] = (kind,) if kind else ()
        elif kind == EventKind.ALERT:
            raise ApiError(403, f"the {principal.role} role does not allow alerts")
        else:
            # Alerts are for the safeguarding lead: left out of other roles' searches.
            kinds = (kind,) if kind else tuple(k for k in KINDS if k != EventKind.ALERT)
        name = params.text("name").lower()
        if name and not name.strip("."):
            raise bad_parameter("name", "a DNS name is needed")
        return EventFilter(
            sites=scope.ids,
            since=since,
            until=until,
            client=params.client(),
            mac=params.mac(),
            hostname=params.text("hostname"),
            group=params.text("group", 64),
            name=name,
            category=params.text("category", 64),
            action=params.text("action", 16),
            kinds=kinds,
            received_by=received_by,
        )

    async def events(self, request: Request) -> Response:
        principal = await require(request, Permission.EVENTS)
        params = Params(request, (*EVENT_FILTERS, *_PAGING))
        scope = await self.scope(principal, params)
        found = self.event_filter(principal, params, scope)
        limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        page = await self._run(self.queries.events, found, limit, params.cursor(EVENT_KEY))
        await self._audited(principal, AuditAction.EVENT_SEARCH, scope, params, len(page.rows))
        return _answer(
            {
                "events": [_event(row, scope.names) for row in page.rows],
                "next": encode_cursor(page.next) if page.next is not None else None,
            }
        )

    async def alerts(self, request: Request) -> Response:
        principal = await require(request, Permission.ALERTS)
        params = Params(request, ("site", "since", "until", "severity", "group", *_PAGING))
        scope = await self.scope(principal, params)
        since, until = params.span(DAY_SECONDS, time.time())
        found = EventFilter(
            sites=scope.ids,
            since=since,
            until=until,
            group=params.text("group", 64),
            severity=params.choice("severity", SEVERITIES),
            kinds=(EventKind.ALERT.value,),
        )
        limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        page = await self._run(self.queries.events, found, limit, params.cursor(EVENT_KEY))
        await self._audited(principal, AuditAction.ALERT_LIST, scope, params, len(page.rows))
        return _answer(
            {
                "alerts": [_event(row, scope.names) for row in page.rows],
                "next": encode_cursor(page.next) if page.next is not None else None,
            }
        )

    async def export(self, request: Request) -> Response:
        principal = await require(request, Permission.EXPORT)
        params = Params(request, EVENT_FILTERS)
        scope = await self.scope(principal, params)
        started = time.time()
        # Only what had arrived when the export began: the count audited is the rows sent.
        found = self.event_filter(principal, params, scope, received_by=started)
        counted = await self._run(self.queries.count_events, found, self.max_export_rows + 1)
        total = min(counted, self.max_export_rows)
        capped = counted > self.max_export_rows
        await self._audited(
            principal, AuditAction.EVENT_EXPORT, scope, params, total, capped=capped
        )
        stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%d-%H%M%S")
        headers = {
            **_NO_STORE,
            "Content-Disposition": f'attachment; filename="schoolgate-events-{stamp}.csv"',
            "X-Schoolgate-Rows": str(total),
        }
        if capped:
            headers["X-Schoolgate-Capped"] = str(self.max_export_rows)
        return StreamingResponse(
            self._csv(found, total, scope.names),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )

    async def _csv(
        self, found: EventFilter, total: int, names: Mapping[int, str]
    ) -> AsyncIterator[bytes]:
        """The export, a page at a time, each read in a worker thread of its own. A database
        failure part way raises: the connection is cut, so that a partial file never looks
        like a whole one."""
        yield csv_export.header().encode()
        sent = 0
        after = None
        while sent < total:
            page = await self._run(
                self.queries.events, found, min(EXPORT_PAGE, total - sent), after
            )
            yield csv_export.lines(page.rows, names).encode()
            sent += len(page.rows)
            if page.next is None:
                break
            after = page.next

    # --- counts -------------------------------------------------------------------------------

    async def daily(self, request: Request) -> Response:
        principal = await require(request, Permission.STATS)
        params = Params(request, ("site", "since", "until", "group", "category"))
        scope = await self.scope(principal, params)
        since, until = params.span(7 * DAY_SECONDS, time.time())
        rows = await self._run(
            self.queries.daily,
            scope.ids,
            hour_of(since),
            until,
            params.text("group", 64),
            params.text("category", 64),
        )
        return _answer(
            {
                "days": [
                    {
                        "site": scope.names.get(r["site_id"], ""),
                        "day": r["day"],
                        "date": datetime.fromtimestamp(r["day"], UTC).date().isoformat(),
                        "group": r["grp"],
                        "category": r["category"],
                        "queries": r["queries"],
                        "blocked": r["blocked"],
                        "alerts": r["alerts"],
                    }
                    for r in rows
                ]
            }
        )

    async def top_blocked(self, request: Request) -> Response:
        principal = await require(request, Permission.STATS)
        params = Params(request, ("site", "since", "until", "category", "limit"))
        scope = await self.scope(principal, params)
        since, until = params.span(7 * DAY_SECONDS, time.time())
        limit = params.integer("limit", 20, 1, MAX_LIMIT)
        rows = await self._run(
            self.queries.top_blocked,
            scope.ids,
            day_of(since),
            until,
            limit,
            params.text("category", 64),
        )
        return _answer({"names": rows})

    # --- devices and requests -----------------------------------------------------------------

    async def devices(self, request: Request) -> Response:
        principal = await require(request, Permission.DEVICES)
        params = Params(request, ("site", "since", "client", "mac", "hostname", "group", *_PAGING))
        scope = await self.scope(principal, params)
        found = DeviceFilter(
            sites=scope.ids,
            since=params.time("since"),
            client=params.client(),
            mac=params.mac(),
            hostname=params.text("hostname"),
            group=params.text("group", 64),
        )
        limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        page = await self._run(self.queries.devices, found, limit, params.cursor(DEVICE_KEY))
        return _answer(
            {
                "devices": [
                    {
                        "site": scope.names.get(d["site_id"], ""),
                        "client_ip": d["client_ip"],
                        "mac": d["mac"],
                        "hostname": d["hostname"],
                        "group": d["grp"],
                        "first_seen": d["first_seen"],
                        "last_seen": d["last_seen"],
                        "events": d["events"],
                    }
                    for d in page.rows
                ],
                "next": encode_cursor(page.next) if page.next is not None else None,
            }
        )

    async def requests(self, request: Request) -> Response:
        principal = await require(request, Permission.REQUESTS)
        params = Params(request, ("site", "status", *_PAGING))
        scope = await self.scope(principal, params)
        status = params.choice("status", STATUSES)
        limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        page = await self._run(
            self.queries.requests, scope.ids, status, limit, params.cursor(REQUEST_KEY)
        )
        return _answer(
            {
                "requests": [
                    {
                        "site": scope.names.get(r["site_id"], ""),
                        "group": r["grp"],
                        **{k: v for k, v in r.items() if k not in ("site_id", "grp")},
                    }
                    for r in page.rows
                ],
                "next": encode_cursor(page.next) if page.next is not None else None,
            }
        )


def admin_api(
    engine: Engine, limiter: anyio.CapacityLimiter, max_export_rows: int = MAX_EXPORT_ROWS
) -> AdminApi:
    """The admin API's handlers, reading through ``engine`` in threads of ``limiter``."""
    return AdminApi(EventQueries(engine), AuditLog(engine), limiter, max_export_rows)


def admin_routes(api: AdminApi) -> list[Route]:
    return [
        Route("/api/v1/sites", api.sites, methods=["GET"]),
        Route("/api/v1/events", api.events, methods=["GET"]),
        Route("/api/v1/events.csv", api.export, methods=["GET"]),
        Route("/api/v1/stats/daily", api.daily, methods=["GET"]),
        Route("/api/v1/stats/top-blocked", api.top_blocked, methods=["GET"]),
        Route("/api/v1/devices", api.devices, methods=["GET"]),
        Route("/api/v1/alerts", api.alerts, methods=["GET"]),
        Route("/api/v1/requests", api.requests, methods=["GET"]),
    ]
