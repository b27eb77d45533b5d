"""The block page's HTML, and the headers every answer carries.

Templates are Jinja2 with autoescaping on for everything: names, categories, groups and the
school's own texts all go through it, so a name like ``<script>.example`` is shown as text.
The only markup not escaped is the page's own stylesheet, whose hash the Content Security
Policy names: no script, no other style, no image or frame can run or load.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from importlib import resources
from typing import Final

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from schoolgate.agent.blockpage.info import BlockInfo
from schoolgate.agent.blockpage.language import format_time
from schoolgate.agent.blockpage.store import MAX_REASON
from schoolgate.agent.blockpage.texts import TEXTS

_PACKAGE: Final = "schoolgate.agent.blockpage"
UNBLOCK_PATH: Final = "/_schoolgate/unblock"
HEALTH_PATH: Final = "/_schoolgate/health"

# The package's own file, never anything from a request: the one text the page trusts.
_CSS: Final = Markup(  # noqa: S704
    resources.files(_PACKAGE).joinpath("templates/style.css").read_text(encoding="utf-8").strip()
)
_CSS_HASH: Final = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")

CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # A block page is about one moment and one device: never kept by a browser or a proxy.
    (b"cache-control", b"no-store"),
)

_env = Environment(
    loader=PackageLoader(_PACKAGE, "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Pages:
    """Renders each page in a language, with the school's name and contact on every one."""

    def __init__(self, school_name: str = "", contact: str = "") -> None:
        self._school = school_name
        self._contact = contact

    def blocked(self, language: str, info: BlockInfo, moment: datetime) -> str:
        t = TEXTS[language]
        if self._school:
            intro = t["blocked_intro_school"].format(school=self._school)
        else:
            intro = t["blocked_intro"]
        return self._render(
            "blocked.html",
            language,
            t["blocked_title"],
            name=info.name,
            intro=intro,
            category=info.category_text(language) or t["category_unknown"],
            group=info.group,
            time=format_time(moment, language),
            action=UNBLOCK_PATH,
            max_reason=MAX_REASON,
        )

    def not_blocked(self, language: str, name: str) -> str:
        return self._render(
            "notblocked.html", language, TEXTS[language]["notblocked_title"], name=name
        )

    def thanks(self, language: str, name: str, stored: bool) -> str:
        """The answer to a request: stored now, or one already received (nothing stored)."""
        t = TEXTS[language]
        if stored:
            heading, text = t["thanks_heading"], t["thanks_text"].format(name=name)
        else:
            heading, text = t["already_heading"], t["already_text"]
        return self._render("message.html", language, t["thanks_title"], heading=heading, text=text)

    def message(self, language: str, key: str) -> str:
        """A short page with one text, for the answers that are not a block page."""
        t = TEXTS[language]
        return self._render("message.html", language, t["error_title"], heading=None, text=t[key])

    def _render(self, template: str, language: str, title: str, **values: object) -> str:
        t = TEXTS[language]
        return _env.get_template(template).render(
            lang=language,
            t=t,
            title=title,
            css=_CSS,
            school=self._school,
            contact=t["contact_line"].format(contact=self._contact) if self._contact else "",
            **values,
        )
