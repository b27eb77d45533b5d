"""What the block page asks the policy: the one seam between the page and the agent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockInfo:
    """The policy's decision for a name and a client, as the page tells it.

    ``category_names`` maps "en", "vi" and "zh" to the category's name in plain words (any may
    be missing: English, then the id, stand in). ``mac`` and ``hostname`` are the device as the
    agent knows it, kept with an unblock request so staff can tell devices apart.
    """

    name: str  # normalized: lowercase, punycode, no trailing dot
    category: str | None
    category_names: Mapping[str, str]
    group: str
    blocked: bool
    rule: str
    mac: str | None = None
    hostname: str | None = None

    def category_text(self, language: str) -> str | None:
        """The category in ``language``, else in English, else its id; None when there is none."""
        return self.category_names.get(language) or self.category_names.get("en") or self.category


Explain = Callable[[str, str], BlockInfo | None]
"""(name from the Host header, client IP) -> the decision, or None for a client that is not the
school's. Called on the event loop for every page and request, so it must be quick and must not
block: the agent's memoized decision code is."""
