"""A collector with two schools' morning in it (``test_admin_api_served.make_world``), and
browsers to sign in to its pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings
from tests.server.test_admin_api_served import World, make_world
from tests.support.browser import Browser
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
