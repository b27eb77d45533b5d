"""The generative AI use page over real HTTP: days, groups and devices, who sees devices."""

from __future__ import annotations

import time
from collections.abc import Callable

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from tests.server.test_admin_api_served import World
from tests.support.browser import Browser

HOSTILE = "<img src=x onerror=alert(1)>"


def lookups(first: int, when: float) -> list[ShippedEvent]:
    """Seven lookups of AI tools at north-primary: five from a pupil's laptop (two blocked),
    two from a member of staff."""
    made = []
    for i, (host, ip, group, action) in enumerate(
        [
            (HOSTILE, "10.1.0.50", "pupils", "allow"),
            (HOSTILE, "10.1.0.50", "pupils", "allow"),
            (HOSTILE, "10.1.0.50", "pupils", "allow"),
            (HOSTILE, "10.1.0.50", "pupils", "block"),
            (HOSTILE, "10.1.0.50", "pupils", "block"),
            ("staff-laptop", "10.1.0.60", "staff", "allow"),
            ("staff-laptop", "10.1.0.60", "staff", "allow"),
        ]
    ):
        made.append(
            ShippedEvent(
                seq=first + i,
                kind=EventKind.DNS,
                time=when + i,
                client_ip=ip,
                hostname=host,
                group=group,
                name="chat.ai-tool.example",
                qtype="A",
                action=action,
                categories=("genai",),
            )
        )
    return made


def test_ai_use_by_day_group_and_device(world: World, browser: Callable[..., Browser]) -> None:
    world.repo.ingest(world.north, "ai", lookups(50_000, time.time() - 120), keep_after=0)
    lead = browser("lead-north")
    page = lead.get("/ai-use", days="7")
    assert page.status_code == 200
    text = page.text
    assert "Generative AI use" in text and "Generative AI tools" in text
    # Seven lookups, two blocked; both groups; both devices, the pupil's first.
    assert ">7<" in text
    assert "<td>pupils</td>" in text and "<td>staff</td>" in text
    assert text.index("10.1.0.50") < text.index("staff-laptop")
    assert "chat.ai-tool.example" in text  # blocked most
    # A hostile device name is text, not markup.
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and HOSTILE not in text
    # The device links to its activity, AI tools only, over the same days.
    assert "category=genai" in text and "client=10.1.0.50" in text


def test_a_viewer_sees_groups_but_not_devices(
    world: World, browser: Callable[..., Browser]
) -> None:
    world.repo.ingest(world.north, "ai", lookups(50_000, time.time() - 120), keep_after=0)
    page = browser("viewer-north").get("/ai-use")
    assert page.status_code == 200
    assert "<td>pupils</td>" in page.text
    assert "10.1.0.50" not in page.text and "Devices that used AI tools most" not in page.text


def test_another_schools_use_is_not_shown(world: World, browser: Callable[..., Browser]) -> None:
    world.repo.ingest(world.north, "ai", lookups(50_000, time.time() - 120), keep_after=0)
    south = browser("lead-south")
    assert "10.1.0.50" not in south.get("/ai-use").text
    assert south.get("/ai-use", site="north-primary").status_code == 403
