"""The overview page over real HTTP: what it shows, and to whom."""

from __future__ import annotations

from collections.abc import Callable

from tests.server.test_admin_api_served import World
from tests.support.browser import Browser


def test_the_overview_counts_the_schools_day(world: World, browser: Callable[..., Browser]) -> None:
    page = browser("head").get("/")
    assert page.status_code == 200, page.text
    assert "north-primary" in page.text and "south-academy" in page.text
    assert "<svg" in page.text
