"""Debian's Chromium, driven by Playwright, for the admin pages' browser tests and screenshots.

Playwright is told where the browser is (``executable_path``): it never downloads one of its
own. ``./dev test`` installs Debian's ``chromium`` package when it is missing; where that cannot
be done (not Debian, not root), ``unavailable`` says why, and the tests skip with that reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    Response,
    ViewportSize,
)

from schoolgate.server.web._session import SECURE_COOKIE

CHROMIUM: Final = Path("/usr/bin/chromium")
# A laptop's screen: what the screenshots show and the tests see.
LAPTOP: Final = ViewportSize(width=1280, height=800)
# Long enough for a page of a loaded collector on a busy two-core machine, short enough that a
# broken page fails the test instead of the test's own time limit.
ACTION_MS: Final = 15_000


def unavailable() -> str | None:
    """Why Chromium cannot be used here, or None when it can."""
    if not CHROMIUM.exists():
        return (
            f"Debian's Chromium is not installed ({CHROMIUM}): ./dev test installs it "
            "(apt-get install chromium) when run as root on Debian"
        )
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not executable by this user"
    return None


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium from the Debian package."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        # Nothing the tests need, and each would reach for the network or the desktop.
        args=["--disable-background-networking", "--disable-component-update", "--no-first-run"],
    )


@dataclass
class Watched:
    """What a page did that it should not: dialogs opened (which only a script can open),
    and the console's complaints."""

    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors

    def attach(self, page: Page) -> Watched:
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return self

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        # An open dialog would hold the page until the action's time limit.
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def csp_refusals(self) -> list[str]:
        """The Content-Security-Policy's refusals: each is a script (or handler) that was in the
        page and would have run without the policy."""
        return [m for m in self.console if "Content Security Policy" in m]


@dataclass
class Tab:
    """A page in a browser context of its own, and what it was seen doing."""

    page: Page
    watched: Watched

    @classmethod
    def watching(cls, page: Page) -> Tab:
        return cls(page, Watched().attach(page))


def add_session(context: BrowserContext, base: str, token: str) -> None:
    """The cookie signing in sets (``__Host-``, Secure, HttpOnly, SameSite=Lax), for a session
    made beforehand."""
    context.add_cookies(
        [
            {
                "name": SECURE_COOKIE,
                "value": token,
                # As the browser keeps the cookie the collector sets (CDP refuses a Secure
                # cookie given by an http:// address, though the browser takes one from it).
                "domain": urlsplit(base).hostname or "",
                "path": "/",
                "secure": True,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )


def follow(page: Page, target: Locator) -> Response | None:
    """Click a link or a form's button and wait for the page it leads to (after the redirect,
    for a form that changes something): the answer to the last request of the way there."""
    with page.expect_navigation() as navigation:
        target.click()
    return navigation.value
