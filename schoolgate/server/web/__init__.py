"""The admin web pages: server-rendered, working without JavaScript, for the people who
answer "what happened, who, when, and what did we do about it".

``web_routes`` assembles them. Each page module holds one page or one family of pages
(``overview``, ``activity``, ``alerts``, ...) and reads through the same stores as the JSON
API, with the same permissions (``auth``) and the same audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from schoolgate.server.errors import ApiError
from schoolgate.server.web import (
    activity,
    ai_use,
    alerts,
    devices,
    indicators,
    overview,
    policy,
    requests,
    review,
    sign_in,
)
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._labels import N_
from schoolgate.server.web._session import SignInNeeded, sign_in_url

STATIC: Final = Path(__file__).parent / "static"


def web_routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        *sign_in.routes(ctx),
        *overview.routes(ctx),
        *alerts.routes(ctx),
        *devices.routes(ctx),
        *requests.routes(ctx),
        *activity.routes(ctx),
        *policy.routes(ctx),
        *ai_use.routes(ctx),
        *indicators.routes(ctx),
        *review.routes(ctx),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def is_page(request: Request) -> bool:
    """Whether the request is for a page (answered in HTML) rather than the API or metrics."""
    path = request.url.path
    return not (path.startswith("/api/") or path in ("/metrics", "/healthz"))


_TITLES: Final = {
    400: N_("That request cannot be answered"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    413: N_("Too large"),
    415: N_("That request cannot be answered"),
    429: N_("Too many tries"),
    503: N_("Unavailable for a moment"),
}


def error_page(ctx: WebContext, request: Request, exc: ApiError) -> Response:
    t = ctx.render.translator(request)
    response = ctx.render.page(
        request,
        "error.html",
        {
            "title": t.gettext(_TITLES.get(exc.status, N_("Something went wrong"))),
            "message": exc.message,
        },
        status=exc.status,
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def sign_in_redirect(exc: SignInNeeded) -> Response:
    return RedirectResponse(sign_in_url(exc.back_to), status_code=303)
