"""The indicators page over real HTTP: one row per school the user sees."""

from __future__ import annotations

from collections.abc import Callable

from tests.server.test_admin_api_served import World
from tests.support.browser import Browser


def test_the_indicators_of_the_schools_a_user_sees(
    world: World, browser: Callable[..., Browser]
) -> None:
    head = browser("head").get("/indicators", days="90")
    assert head.status_code == 200
    assert "north-primary" in head.text and "south-academy" in head.text
    # Each school's morning holds one alert, none acknowledged yet; no heartbeats.
    assert "0 / 2" in head.text and "no heartbeats" in head.text
    lead = browser("lead-north")
    mine = lead.get("/indicators")
    assert "north-primary" in mine.text and "south-academy" not in mine.text
    assert lead.get("/indicators", site="south-academy").status_code == 403
    assert lead.get("/indicators", days="7").status_code == 400  # not one of the periods
