"""SafeSearch and YouTube Restricted Mode, enforced by the answers the agent gives.

Search engines that offer a DNS-enforced safe mode run a host for it
(``forcesafesearch.google.com``, ``strict.bing.com``, ...). For a group with the safe mode on, a
question for one of the engine's names is answered with a CNAME to that host plus the host's own
records, resolved upstream: the browser connects to the engine's filtered front end whatever the
user set, and sees a normal answer. The table of engines, names and hosts is
``filter_lists/safesearch.toml``; it also holds what each age tier gets when a group does not say.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Final

from schoolgate.agent.dns.wire import text_to_wire
from schoolgate.agent.policy.categories import AgeTier
from schoolgate.agent.policy.decision import Action, Decision

BUNDLED_TABLE: Final = "safesearch.toml"
YOUTUBE: Final = "youtube"


class YouTubeMode(StrEnum):
    STRICT = "strict"
    MODERATE = "moderate"
    OFF = "off"


@dataclass(frozen=True)
class Engine:
    id: str
    name: str
    names: tuple[str, ...]  # exact names, normalized text
    targets: Mapping[str, str]  # safe-mode level -> the engine's host for it


@dataclass(frozen=True)
class SafeSearchDefault:
    safesearch: bool
    youtube: YouTubeMode


@dataclass(frozen=True)
class SafeSearchTable:
    engines: Mapping[str, Engine]
    defaults: Mapping[AgeTier, SafeSearchDefault]

    @property
    def search_engines(self) -> tuple[str, ...]:
        """The engines ``safesearch = true`` turns on: all but YouTube, which has its own key."""
        return tuple(e for e in self.engines if e != YOUTUBE)

    def rewrites(self, engines: Iterable[str], youtube: YouTubeMode) -> dict[bytes, Decision]:
        """The names a group's settings rewrite, by wire name, with the decision for each."""
        chosen = [(self.engines[e], "strict") for e in engines]
        if youtube is not YouTubeMode.OFF:
            chosen.append((self.engines[YOUTUBE], youtube.value))
        found: dict[bytes, Decision] = {}
        for engine, level in chosen:
            target = engine.targets[level]
            decision = Decision(
                Action.ALLOW,
                f"safe search: {engine.name} ({level})",
                rewrite=text_to_wire(target),
            )
            for name in engine.names:
                found[text_to_wire(name)] = decision
        return found


def parse_table(text: str) -> SafeSearchTable:
    """The table from TOML text; ``ValueError`` naming the fault when it is unsound."""
    raw = tomllib.loads(text)
    engines: dict[str, Engine] = {}
    for item in raw.get("engine", []):
        targets = dict(item["targets"])
        if "strict" not in targets:
            raise ValueError(f"engine {item['id']}: no strict target")
        engines[item["id"]] = Engine(item["id"], item["name"], tuple(item["names"]), targets)
    if YOUTUBE not in engines or set(engines[YOUTUBE].targets) != {"strict", "moderate"}:
        raise ValueError("youtube needs a strict and a moderate target")
    defaults: dict[AgeTier, SafeSearchDefault] = {}
    for tier in AgeTier:
        entry = raw.get("defaults", {}).get(tier.value)
        if entry is None:
            raise ValueError(f"no defaults for age tier {tier.value}")
        defaults[tier] = SafeSearchDefault(bool(entry["safesearch"]), YouTubeMode(entry["youtube"]))
    return SafeSearchTable(engines, defaults)


@cache
def bundled() -> SafeSearchTable:
    """The table shipped with schoolgate."""
    package = resources.files("schoolgate.filter_lists")
    return parse_table(package.joinpath(BUNDLED_TABLE).read_text(encoding="utf-8"))
