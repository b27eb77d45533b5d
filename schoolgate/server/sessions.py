"""Signing in and out: ``POST`` and ``DELETE /api/v1/sessions``.

``POST`` takes ``{"name": ..., "password": ...}`` and answers ``{"token", "expires", "user",
"role"}``: a session token for ``Authorization: Bearer``, good for the configured lifetime
(``users.session_hours``). ``DELETE`` revokes the token it is sent with.

A wrong password, an unknown name and a disabled account get the same 401. Failures are
counted per name and per client address; past the limits a sign-in is refused with 429 and
``Retry-After``, without a password check. The limit per address is higher than the one per
name, since a school's staff often reach the collector from one address. Behind a proxy, the
address is the one the proxy forwards (uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1).

Password checks run two at a time at most: each takes 64 MiB and most of a core for a good
part of a second, and a flood of sign-ins must not take the collector's memory.

Every sign-in that gets as far as the limits is counted by outcome, and every sign-out that
ended a token, the admin pages' with the API's (``schoolgate_collector_sign_ins_total``,
``schoolgate_collector_sign_outs_total``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schoolgate.server.auth import Authenticator, bearer_token
from schoolgate.server.errors import ApiError, bad_parameter, in_thread
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.passwords import MAX_LENGTH
from schoolgate.server.throttle import FailureWindow
from schoolgate.server.users import SignedIn, normal_name

MAX_BODY: Final = 8_192
FAILURES_PER_NAME: Final = 10
FAILURES_PER_ADDRESS: Final = 50
FAILURE_WINDOW: Final = 15 * 60.0
_CHECKS_AT_ONCE: Final = 2


class Sessions:
    def __init__(
        self,
        auth: Authenticator,
        lifetime: float,
        metrics: CollectorMetrics,
        per_name: int = FAILURES_PER_NAME,
        per_address: int = FAILURES_PER_ADDRESS,
    ) -> None:
        self.auth = auth
        self.lifetime = lifetime
        self.metrics = metrics
        self.by_name = FailureWindow(per_name, FAILURE_WINDOW)
        self.by_address = FailureWindow(per_address, FAILURE_WINDOW)
        self._checks = anyio.CapacityLimiter(_CHECKS_AT_ONCE)

    async def sign_in(self, request: Request) -> Response:
        name, password = await _credentials(request)
        address = request.client.host if request.client is not None else ""
        signed = await self.attempt(name, password, address)
        p = signed.principal
        return JSONResponse(
            {"token": signed.token, "expires": signed.expires, "user": p.name, "role": p.role},
            status_code=201,
        )

    async def attempt(self, name: str, password: str, address: str) -> SignedIn:
        """A new session for ``name``, within the limits on failures; the API and the admin
        pages both sign in here, so one limit covers both. ``ApiError`` 429 or 401 else."""
        now = time.monotonic()
        wait = max(
            self.by_name.retry_after(name, now) or 0.0,
            self.by_address.retry_after(address, now) or 0.0,
        )
        if wait > 0:
            self.metrics.sign_in["throttled"].inc()
            raise ApiError(
                429,
                "too many failed sign-ins: wait before trying again",
                {"Retry-After": str(math.ceil(wait))},
            )
        signed: SignedIn | None = None
        if len(password) <= MAX_LENGTH:
            signed = await in_thread(
                self._checks, self.auth.users.sign_in, name, password, self.lifetime
            )
        if signed is None:
            self.by_name.failed(name, time.monotonic())
            self.by_address.failed(address, time.monotonic())
            self.metrics.sign_in["rejected"].inc()
            raise ApiError(401, "wrong name or password, or the account is disabled")
        self.by_name.clear(name)
        self.metrics.sign_in["success"].inc()
        return signed

    async def sign_out(self, request: Request) -> Response:
        await self.auth.principal(request)
        await self.end(bearer_token(request))
        return Response(status_code=204)

    async def end(self, token: str) -> bool:
        """Revoke ``token``, for the API's sign-out and the admin pages'; whether it existed
        (a token revoked meanwhile, by another tab or the command line, is no sign-out)."""
        ended = await in_thread(self.auth.limiter, self.auth.users.sign_out, token)
        if ended:
            self.metrics.sign_outs.inc()
        return ended


async def _credentials(request: Request) -> tuple[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"the body is over {MAX_BODY:,} bytes")
    try:
        found = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, 'the body must be JSON: {"name": ..., "password": ...}') from None
    if not isinstance(found, dict):
        raise ApiError(400, 'the body must be a JSON object: {"name": ..., "password": ...}')
    name, password = found.get("name"), found.get("password")
    if not isinstance(name, str) or not name.strip():
        raise bad_parameter("name", "a user name is needed")
    if not isinstance(password, str) or not password:
        raise bad_parameter("password", "a password is needed")
    return normal_name(name), password


def session_routes(sessions: Sessions) -> list[Route]:
    return [
        Route("/api/v1/sessions", sessions.sign_in, methods=["POST"]),
        Route("/api/v1/sessions", sessions.sign_out, methods=["DELETE"]),
    ]
