"""Screenshots of the admin pages for the documentation, at a laptop's size (1280 x 800).

    python -m tests.support.screenshots [DIR]    (from the repository's top; DIR: docs/screenshots)

A real collector is filled with the demo district's week (``demo_world``) and headless Chromium
(Debian's, as in the browser tests) opens each page as the person who uses it, signed in, and
saves it as a PNG. ``PAGES`` is the list: a new page gets its screenshot by adding a line there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from playwright.sync_api import Browser, sync_playwright

from tests.support.chromium import LAPTOP, add_session, launch, unavailable
from tests.support.demo_world import (
    ADMIN,
    LEAD,
    SOUTH,
    TECHNICIAN,
    TIMEZONE,
    DemoWorld,
    make,
    serve,
)

DEFAULT_DIR: Final = Path("docs/screenshots")


@dataclass(frozen=True)
class Shot:
    file: str  # the PNG's name in the output directory
    path: str  # the page, with any query
    user: str | None  # who is signed in (None: nobody)
    click: str = ""  # a CSS selector to click first (the first match), to open a form


PAGES: Final = (
    Shot("sign-in.png", "/sign-in", None),
    Shot("overview.png", "/", ADMIN),
    Shot("alerts.png", "/alerts?state=open", LEAD, click="details.review summary"),
    Shot("requests.png", "/requests?status=pending", ADMIN),
    Shot("devices.png", "/devices?state=new", TECHNICIAN),
    Shot("activity.png", "/activity?kind=dns", ADMIN),
    Shot("policy.png", "/policy", TECHNICIAN),
    Shot("ai-use.png", "/ai-use?days=7", ADMIN),
    Shot("indicators.png", "/indicators", ADMIN),
    Shot("review.png", f"/review?site={SOUTH}", ADMIN),
)


def take(browser: Browser, base: str, world: DemoWorld, shot: Shot, out: Path) -> Path:
    context = browser.new_context(viewport=LAPTOP, locale="en-GB", base_url=base)
    try:
        if shot.user is not None:
            add_session(context, base, world.sessions[shot.user])
        page = context.new_page()
        answer = page.goto(shot.path)
        if answer is None or answer.status != 200:
            status = answer.status if answer is not None else "no answer"
            raise RuntimeError(f"{shot.path} answered {status}: not a page to show")
        if shot.click:
            page.locator(shot.click).first.click()
        saved = out / shot.file
        page.screenshot(path=saved)
        return saved
    finally:
        context.close()


def take_all(out: Path, shots: Sequence[Shot] = PAGES) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="schoolgate-screenshots-") as state:
        world = make(Path(state), time.time())
        with serve(Path(state), TIMEZONE) as collector, sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                return [take(browser, collector.url, world, shot, out) for shot in shots]
            finally:
                browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.screenshots",
        description="Screenshots of the admin pages for the documentation.",
    )
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help="where to save")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    for saved in take_all(args.dir):
        print(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
