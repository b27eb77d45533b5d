"""The block page's HTTP handlers: the page, the unblock form, the health check.

Everything a request carries is hostile: the Host header and the form are checked before use
and never echoed raw, the client is the connection's address (headers such as
X-Forwarded-For are never believed), and nothing a request does can raise out of here: an
unexpected error is logged and answered 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Final
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schoolgate.agent.blockpage.hosts import name_from_host, name_from_text
from schoolgate.agent.blockpage.info import Explain
from schoolgate.agent.blockpage.language import choose_language
from schoolgate.agent.blockpage.pages import HEALTH_PATH, SECURITY_HEADERS, UNBLOCK_PATH, Pages
from schoolgate.agent.blockpage.store import (
    DuplicateRequest,
    StoreError,
    TooManyRequests,
    UnblockStore,
)
from schoolgate.agent.throttle import Throttle

log = logging.getLogger(__name__)

# The form has two short fields; anything much bigger is not from it.
MAX_BODY: Final = 4096
_MAX_FIELDS: Final = 8
_FORM: Final = "application/x-www-form-urlencoded"
# A broken disk or a bug a pupil can trigger at will must not flood the log.
_LOG_EVERY: Final = 60.0


class BlockPageCounters:
    """Plain integers, read when somebody asks (as the DNS counters are)."""

    __slots__ = (
        "errors",
        "pages_served",
        "requests_duplicate",
        "requests_rate_limited",
        "requests_stored",
        "store_errors",
    )

    errors: int  # unexpected failures, answered 500
    pages_served: int  # block pages shown
    requests_duplicate: int  # the same request again within the hour: not stored
    requests_rate_limited: int  # over the hourly or pending limit: not stored
    requests_stored: int
    store_errors: int  # the store could not be written: answered 503

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def client_ip(request: Request) -> str | None:
    """The peer's address as the policy knows it: an IPv4-mapped IPv6 address as IPv4."""
    if request.client is None:
        return None
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def same_origin(request: Request) -> bool:
    """Whether a form post comes from the page itself, as far as the browser says.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with a form post (and ``Referer`` unless
    told not to); any of them naming another site refuses the post. A post with none of them
    (an old browser, a script on the device itself) is taken: it can only file a request in its
    own device's name, within the hourly limit.
    """
    headers = request.headers
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    host = (headers.get("host") or "").lower()
    for header in ("origin", "referer"):
        value = headers.get(header)
        if value is None or (value == "null" and header == "origin"):
            continue
        if urlsplit(value).netloc.lower() != host:
            return False
    return True


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class Handlers:
    def __init__(
        self,
        explain: Explain,
        store: UnblockStore,
        pages: Pages,
        counters: BlockPageCounters,
        default_language: str,
        max_requests_per_hour: int,
        clock: Callable[[], float],
        timezone: tzinfo | None = None,
    ) -> None:
        self._explain = explain
        self._store = store
        self._pages = pages
        self._counters = counters
        self._default = default_language
        self._max_per_hour = max_requests_per_hour
        self._clock = clock
        self._timezone = timezone
        self._store_log = Throttle(_LOG_EVERY)

    def _language(self, request: Request) -> str:
        return choose_language(request.headers.get("accept-language"), self._default)

    @staticmethod
    def _html(language: str, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            body,
            status_code=status,
            headers={"Content-Language": language, "Vary": "Accept-Language"},
        )

    def _message(self, language: str, status: int, key: str) -> HTMLResponse:
        return self._html(language, self._pages.message(language, key), status)

    async def page(self, request: Request) -> Response:
        language = self._language(request)
        ip = client_ip(request)
        if ip is None:
            return self._message(language, 403, "error_not_ours")
        name = name_from_host(request.headers.get("host"))
        if name is None:
            return self._message(language, 400, "error_bad_host")
        info = self._explain(name, ip)
        if info is None:
            return self._message(language, 403, "error_not_ours")
        if not info.blocked:
            # The lists or the schedule changed since the browser was sent here.
            return self._html(language, self._pages.not_blocked(language, info.name))
        self._counters.pages_served += 1
        moment = datetime.fromtimestamp(self._clock(), self._timezone)
        return self._html(language, self._pages.blocked(language, info, moment))

    async def unblock(self, request: Request) -> Response:
        language = self._language(request)
        ip = client_ip(request)
        if ip is None:
            return self._message(language, 403, "error_not_ours")
        # The form posts to its own origin; another site making a pupil's browser post here
        # would file requests in the pupil's name.
        if not same_origin(request):
            return self._message(language, 400, "error_bad_form")
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _FORM:
            return self._message(language, 400, "error_bad_form")
        body = await read_body(request, MAX_BODY)
        if body is None:
            return self._message(language, 413, "error_too_large")
        try:
            fields = parse_qs(
                body.decode("ascii"),
                keep_blank_values=True,
                max_num_fields=_MAX_FIELDS,
                encoding="utf-8",
                errors="strict",
            )
        except ValueError:  # not ASCII, bad UTF-8 escapes, too many fields
            return self._message(language, 400, "error_bad_form")
        names = fields.get("name", [])
        name = name_from_text(names[0]) if len(names) == 1 else None
        if name is None:
            return self._message(language, 400, "error_bad_form")
        info = self._explain(name, ip)
        if info is None:
            return self._message(language, 403, "error_not_ours")
        if not info.blocked:
            return self._message(language, 400, "error_not_blocked")
        try:
            request_made = await asyncio.to_thread(
                self._store.add,
                client_ip=ip,
                name=info.name,
                group=info.group,
                language=language,
                category=info.category,
                reason=fields.get("reason", [""])[0],
                mac=info.mac,
                hostname=info.hostname,
                max_per_hour=self._max_per_hour,
                now=self._clock(),
            )
        except DuplicateRequest:
            self._counters.requests_duplicate += 1
            return self._html(language, self._pages.thanks(language, info.name, stored=False))
        except TooManyRequests:
            self._counters.requests_rate_limited += 1
            return self._html(language, self._pages.thanks(language, info.name, stored=False))
        except StoreError as exc:
            self._counters.store_errors += 1
            if self._store_log():
                log.error(
                    "block page: cannot store an unblock request: %s (%d more failures since"
                    " the last report)",
                    exc,
                    self._store_log.take_skipped(),
                )
            return self._message(language, 503, "error_unavailable")
        self._counters.requests_stored += 1
        log.info(
            "unblock request %s from %s (group %s) for %s",
            request_made.id,
            ip,
            info.group,
            info.name,
        )
        return self._html(language, self._pages.thanks(language, info.name, stored=True))

    async def health(self, _request: Request) -> Response:
        return PlainTextResponse("ok")


class Guard:
    """The outermost layer: security headers on every answer, and no exception escapes.

    Starlette answers an unexpected exception with its own short 500 and raises it again for
    the server to log; here it is logged (at most once a minute) and counted instead, so the
    server and the agent never see it.
    """

    def __init__(self, app: ASGIApp, counters: BlockPageCounters) -> None:
        self._app = app
        self._counters = counters
        self._log = Throttle(_LOG_EVERY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_with_headers)
        except Exception:
            self._counters.errors += 1
            if self._log():
                log.exception(
                    "block page: unexpected error answering %s %r (%d more since the last report)",
                    scope.get("method"),
                    scope.get("path", "")[:200],
                    self._log.take_skipped(),
                )
            if not started:
                response = PlainTextResponse("internal error", status_code=500)
                await response(scope, receive, send_with_headers)


def make_app(handlers: Handlers, counters: BlockPageCounters) -> Guard:
    routes = [
        Route(HEALTH_PATH, handlers.health, methods=["GET"]),
        Route(UNBLOCK_PATH, handlers.unblock, methods=["POST"]),
        # Every other path on every blocked name is the block page; HEAD comes with GET.
        Route("/{path:path}", handlers.page, methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), counters)
