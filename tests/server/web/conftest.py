"""A collector with two schools' morning in it (``test_admin_api_served.make_world``), and
browsers to sign in to its pages: an HTTP client that keeps cookies, and headless Chromium on
a collector holding the demo district's week (``tests.support.demo_world``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import BrowserContext, sync_playwright

from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings
from tests.server.test_admin_api_served import World, make_world
from tests.support.browser import Browser
from tests.support.chromium import (
    ACTION_MS,
    LAPTOP,
    Tab,
    add_session,
    launch,
    unavailable,
)
from tests.support.collector import CollectorThread
from tests.support.demo_world import DATABASE, TIMEZONE, DemoWorld, make, serve
from tests.support.users import PASSWORD


@pytest.fixture
def world(repo: SqlRepository, settings: CollectorSettings) -> Iterator[World]:
    made = make_world(repo, settings)
    yield made
    made.collector.stop()


@pytest.fixture
def browser(world: World) -> Iterator[Callable[..., Browser]]:
    """``browser(user)``: a browser signed in as ``user`` (None: not signed in)."""
    opened: list[Browser] = []

    def open_as(user: str | None = None, language: str = "en") -> Browser:
        made = Browser(world.collector.url, language)
        opened.append(made)
        if user is not None:
            signed = made.sign_in(user, PASSWORD)
            assert signed.status_code == 303, signed.text
        return made

    yield open_as
    for made in opened:
        made.close()


# --- a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[PlaywrightBrowser]:
    """Headless Chromium, one for a module's tests; each test opens contexts of its own."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoWorld]:
    """The demo district's database, made once for a module and copied for each test."""
    made = tmp_path_factory.mktemp("demo-template")
    return made, make(made, time.time())


@pytest.fixture
def demo_world(demo_template: tuple[Path, DemoWorld]) -> DemoWorld:
    return demo_template[1]


@pytest.fixture
def demo(demo_template: tuple[Path, DemoWorld], tmp_path: Path) -> Iterator[CollectorThread]:
    """A collector of its own for the test, on a copy of the demo district."""
    state = tmp_path / "collector"
    state.mkdir()
    shutil.copyfile(demo_template[0] / DATABASE, state / DATABASE)
    with serve(state, TIMEZONE) as collector:
        yield collector


@pytest.fixture
def tab(
    chromium: PlaywrightBrowser, demo: CollectorThread, demo_world: DemoWorld
) -> Iterator[Callable[..., Tab]]:
    """``tab(user)``: a new browser context on the demo collector, with ``user``'s session
    cookie (None: not signed in), its page watched for dialogs and the console."""
    contexts: list[BrowserContext] = []

    def open_tab(user: str | None = None) -> Tab:
        context = chromium.new_context(viewport=LAPTOP, locale="en-GB", base_url=demo.url)
        context.set_default_timeout(ACTION_MS)
        contexts.append(context)
        if user is not None:
            add_session(context, demo.url, demo_world.sessions[user])
        return Tab.watching(context.new_page())

    yield open_tab
    for context in contexts:
        context.close()
