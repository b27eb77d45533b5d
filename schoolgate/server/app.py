"""The collector's HTTP API (Starlette): batches in, metrics out.

``POST /api/v1/events`` takes one batch from an agent (see ``schoolgate.event_batch``):

| answer | when | what the agent does |
|---|---|---|
| 200 | recorded now, or recorded before under the same ``Idempotency-Key`` | forgets the batch |
| 400 | malformed: headers, gzip, a line (the message names it) | quarantines the batch |
| 401 | no token, or not a site's token | keeps it and retries later |
| 413 | over the size limits | quarantines it (after splitting, when it can) |
| 415 | a ``Content-Encoding`` other than gzip or none | quarantines it |
| 422 | an event's time is too far ahead of the collector's clock | quarantines it |
| 503 | the database failed; ``Retry-After`` says when to try again | retries |

The site is the token's, never a name in the body. Database work runs in worker threads, so
a slow disk holds up only the requests that need it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from schoolgate.event_batch import BatchError, ShippedEvent, decode_batch
from schoolgate.server.admin_api import admin_api, admin_routes
from schoolgate.server.auth import Authenticator
from schoolgate.server.errors import ApiError, api_error_response, error_response
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.policies import PolicyStore
from schoolgate.server.policy_admin_api import policy_admin_routes
from schoolgate.server.policy_api import PolicyApi
from schoolgate.server.repository import Repository, SiteRef
from schoolgate.server.sessions import Sessions, session_routes
from schoolgate.server.settings import CollectorSettings, local_zone
from schoolgate.server.users import UserStore
from schoolgate.server.web import error_page, is_page, sign_in_redirect, web_routes
from schoolgate.server.web._context import make_context
from schoolgate.server.web._render import Renderer
from schoolgate.server.web._session import SignInNeeded, WebAuth

log = logging.getLogger(__name__)

MAX_KEY_LENGTH: Final = 200
RETRY_AFTER_SECONDS: Final = 5
_DB_THREADS: Final = 8
_TOKEN_CACHE_SECONDS: Final = 30.0


class _TooLarge(Exception):
    pass


async def _body(request: Request, most: int) -> bytes:
    """The request body, refused once it passes ``most`` bytes (before reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > most:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


class Collector:
    """The API's handlers, with what they share: the store, the settings and the metrics."""

    def __init__(
        self, repo: Repository, settings: CollectorSettings, metrics: CollectorMetrics
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.metrics = metrics
        self.threads = anyio.CapacityLimiter(_DB_THREADS)
        self._tokens: dict[str, tuple[SiteRef, float]] = {}

    async def site_of(self, request: Request) -> SiteRef | None:
        """The site whose bearer token the request carries, None without a valid one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and now - cached[1] < _TOKEN_CACHE_SECONDS:
            return cached[0]
        site = await anyio.to_thread.run_sync(self.repo.site_for_token, token, limiter=self.threads)
        if site is not None:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[token] = (site, now)
        return site

    async def post_events(self, request: Request) -> Response:
        m = self.metrics
        try:
            site = await self.site_of(request)
        except SQLAlchemyError as exc:
            return self._failed(exc)
        if site is None:
            m.batch["unauthorized"].inc()
            return error_response(
                401, "a site's bearer token is needed", {"WWW-Authenticate": 'Bearer realm="api"'}
            )
        rejected = self._check_headers(request)
        if rejected is not None:
            m.batch["rejected"].inc()
            return rejected
        limits = self.settings.limits
        try:
            body = await _body(request, limits.max_compressed_bytes)
            gzipped = request.headers.get("content-encoding", "").strip().lower() == "gzip"
            events = await anyio.to_thread.run_sync(decode_batch, body, gzipped, limits)
        except _TooLarge:
            m.batch["rejected"].inc()
            return error_response(413, f"the body is over {limits.max_compressed_bytes:,} bytes")
        except BatchError as exc:
            m.batch["rejected"].inc()
            log.info("batch from %s refused: %s", site.name, exc)
            return error_response(413 if exc.too_large else 400, str(exc))
        now = time.time()
        ahead = _too_far_ahead(events, now + self.settings.max_future_seconds)
        if ahead is not None:
            m.batch["rejected"].inc()
            m.event["rejected"].inc(len(events))
            return error_response(
                422,
                f"event {ahead.seq} is {ahead.time - now:.0f} s ahead of the collector's clock "
                f"(at most {self.settings.max_future_seconds:g} s): check the agent's clock",
            )
        key = request.headers["idempotency-key"]
        keep_after = now - self.settings.retention_seconds
        started = time.perf_counter()
        try:
            result = await anyio.to_thread.run_sync(
                self.repo.ingest, site, key, events, keep_after, limiter=self.threads
            )
        except DataError as exc:
            # A value the database cannot hold (too long once reversed, say): the same batch
            # would fail again, so it is refused rather than retried.
            m.batch["rejected"].inc()
            m.event["rejected"].inc(len(events))
            return error_response(400, f"an event cannot be stored: {getattr(exc, 'orig', exc)}")
        except SQLAlchemyError as exc:
            return self._failed(exc)
        m.insert_seconds.observe(time.perf_counter() - started)
        m.seen(site.name, now)
        if result.replayed:
            m.batch["replayed"].inc()
            m.event["duplicate"].inc(len(events))
        else:
            m.batch["accepted"].inc()
            m.event["inserted"].inc(result.inserted)
            m.event["duplicate"].inc(result.duplicates)
            m.event["expired"].inc(result.expired)
        return JSONResponse(
            {
                "site": site.name,
                "events": len(events),
                "inserted": result.inserted,
                "duplicates": len(events) if result.replayed else result.duplicates,
                "expired": result.expired,
                "replayed": result.replayed,
            }
        )

    def _check_headers(self, request: Request) -> Response | None:
        key = request.headers.get("idempotency-key", "")
        if not _valid_key(key):
            return error_response(
                400,
                f"an Idempotency-Key header of 1 to {MAX_KEY_LENGTH} printable ASCII characters "
                "is needed",
            )
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            return error_response(
                415, f"Content-Encoding {encoding!r}: only gzip, or none, is accepted"
            )
        return None

    def _failed(self, exc: SQLAlchemyError) -> Response:
        self.metrics.db_errors.inc()
        self.metrics.batch["failed"].inc()
        log.warning("database error, batch refused for now: %s", getattr(exc, "orig", exc))
        return error_response(
            503,
            "the collector's database is unavailable; send the batch again later",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def metrics_page(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")


def _too_far_ahead(events: Sequence[ShippedEvent], limit: float) -> ShippedEvent | None:
    for event in events:
        if event.time > limit:
            return event
    return None


def create_app(
    repo: Repository,
    settings: CollectorSettings,
    metrics: CollectorMetrics | None = None,
    *,
    policies: PolicyStore | None = None,
) -> Starlette:
    collector = Collector(repo, settings, metrics or CollectorMetrics())
    policy = PolicyApi(policies or PolicyStore(repo.engine), collector.site_of, collector.threads)
    # Users sign in for the admin API; auth.require finds the authenticator on app.state.
    auth = Authenticator(UserStore(repo.engine), collector.threads)
    sessions = Sessions(auth, settings.session_seconds, collector.metrics)
    admin = admin_api(repo.engine, collector.threads, settings.max_export_rows)
    web = WebAuth(auth, settings.allow_plain_http)
    pages = make_context(
        web,
        Renderer(web, settings.timezone or local_zone()),
        collector.threads,
        admin,
        policy.policies,
        sessions,
        settings.session_seconds,
    )

    async def refused(request: Request, exc: Exception) -> Response:
        # One error path for the API and the pages: JSON for the one, a page for the other.
        assert isinstance(exc, ApiError)
        if is_page(request):
            return error_page(pages, request, exc)
        return await api_error_response(request, exc)

    async def sign_in_first(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        return sign_in_redirect(exc)

    app = Starlette(
        routes=[
            Route("/api/v1/events", collector.post_events, methods=["POST"]),
            Route("/api/v1/policy", policy.get_policy, methods=["GET"]),
            Route("/api/v1/requests", policy.post_requests, methods=["POST"]),
            Route("/metrics", collector.metrics_page, methods=["GET"]),
            Route("/healthz", collector.health, methods=["GET"]),
            *session_routes(sessions),
            *admin_routes(admin),
            *policy_admin_routes(repo.engine, collector.threads),
            *web_routes(pages),
        ],
        exception_handlers={ApiError: refused, SignInNeeded: sign_in_first},
    )
    app.state.collector = collector
    app.state.auth = auth
    return app
