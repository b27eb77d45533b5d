"""Finding the line of a TOML file that writes a key, for configuration errors."""

from __future__ import annotations

import pytest

from schoolgate.agent.config_lines import key_line, key_path

TEXT = """# a comment: groups = "not a key"
[server]
listen = ["127.0.0.1:53"]

[policy]
age_tier = "ks2"
actions = { child-abuse = "allow", games = "block" }

[[groups]]
name = "ks2"
addresses = [
  "10.0.0.0/8",
]

[[groups]]   # staff
"name" = "staff"
[groups.actions]
terrorism = "allow"

[[groups]]
name = "guests"
schedules.club = { games = "allow" }
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("server.listen[0]", 3),
        ("policy.actions.child-abuse", 7),
        ("policy", 5),
        ("groups", 9),  # the first entry of an array of tables
        ("groups[0].addresses[0]", 11),
        ("groups[1].name", 16),  # a quoted key
        ("groups[1].actions.terrorism", 18),  # a sub-table of the second entry
        ("groups[2].order", 20),  # left out: the entry's header
        ("groups[2].schedules.club.games", 22),  # a dotted key holding an inline table
        ("upstream.servers", None),  # nowhere in the file
        ("lists[0].path", None),
    ],
)
def test_the_line_that_writes_a_key(key: str, line: int | None) -> None:
    assert key_line(TEXT, key) == line


def test_key_paths() -> None:
    assert key_path("groups[1].actions.terrorism") == ["groups", 1, "actions", "terrorism"]
    assert key_path("a[0][2].b") == ["a", 0, 2, "b"]
    assert key_path("") == []
