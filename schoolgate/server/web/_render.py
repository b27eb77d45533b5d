"""Rendering the admin pages: one Jinja2 environment, the layout's shared context, and the
headers every page goes out with.

Autoescaping is on for every template and cannot be turned off per page: names, hostnames
and notes come from the network or from people, and a pupil can look up
``<img src=x onerror=alert(1)>.example``. No template uses ``|safe``; the only markup made
in Python is the charts' SVG (``_charts``), which escapes every text it holds.

The pages run no script, so the Content-Security-Policy allows none: were a name ever to be
written out unescaped, the browser would still refuse to run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Final

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from schoolgate import __version__
from schoolgate.server.auth import Permission, Principal
from schoolgate.server.web._i18n import DEFAULT, LANGUAGES, Translator, from_accept_language
from schoolgate.server.web._labels import N_, TABLES
from schoolgate.server.web._session import CSRF_FIELD, WebAuth, csrf_token

LANGUAGE_COOKIE: Final = "schoolgate-lang"
TEMPLATES: Final = Path(__file__).parent / "templates"
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages name pupils' devices: nothing is kept by a browser or proxy cache.
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # the English message id
    permission: Permission
    # The tab the menu opens, for a list whose work is one of its tabs. The item is marked as
    # the page being shown by ``path`` alone, so it stays marked on the list's other tabs.
    query: str = ""

    @property
    def href(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


# The order of the menu: the day's picture first, then what needs doing, then the records.
NAV: Final = (
    NavItem("/", N_("Overview"), Permission.STATS),
    NavItem("/alerts", N_("Alerts"), Permission.ALERTS, "state=open"),
    NavItem("/requests", N_("Unblock requests"), Permission.REQUESTS, "status=pending"),
    NavItem("/devices", N_("Devices"), Permission.DEVICES, "state=new"),
    NavItem("/activity", N_("Activity"), Permission.EVENTS),
    NavItem("/policy", N_("Policy"), Permission.STATS),
    NavItem("/ai-use", N_("AI use"), Permission.STATS),
    NavItem("/indicators", N_("Indicators"), Permission.STATS),
    NavItem("/review", N_("Annual review"), Permission.STATS),
)


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return from_accept_language(request.headers.get("accept-language", DEFAULT))


class Renderer:
    def __init__(self, web: WebAuth, zone: tzinfo) -> None:
        self.web = web
        self.zone = zone
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def translator(self, request: Request) -> Translator:
        return Translator(language_of(request), self.zone)

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        status: int = 200,
        principal: Principal | None = None,
    ) -> HTMLResponse:
        t = self.translator(request)
        user = principal or getattr(request.state, "principal", None)
        session = self.web.session_token(request)
        shared = {
            "t": t,
            "_": t.gettext,
            "user": user,
            "nav": [n for n in NAV if user is not None and user.can(n.permission)],
            "here": request.url.path,
            "here_full": request.url.path + ("?" + request.url.query if request.url.query else ""),
            "languages": LANGUAGES,
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(session) if session else "",
            "version": __version__,
            "Permission": Permission,
        }

        def label(table: str, value: str | None) -> str:
            """The words for a fixed value, translated; an unknown value as it is."""
            if value is None:
                return ""
            known = TABLES[table].get(value)
            return t.gettext(known) if known is not None else value

        shared["label"] = label
        html = self.env.get_template(template).render({**shared, **context})
        return HTMLResponse(html, status_code=status, headers=HEADERS)
