"""Every word the block page shows, in each language it speaks (``texts.toml``).

The texts live in a TOML file so translators can work on them without touching code; a test
holds every language to the same keys, so a text added in English without its translations
fails the tests rather than showing a blank to a pupil.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Final

LANGUAGES: Final = ("en", "vi", "zh")


def _load() -> dict[str, dict[str, str]]:
    raw = tomllib.loads(
        resources.files("schoolgate.agent.blockpage").joinpath("texts.toml").read_text("utf-8")
    )
    return {
        language: {key: str(value) for key, value in raw[language].items()}
        for language in LANGUAGES
    }


TEXTS: Final[Mapping[str, Mapping[str, str]]] = _load()

# Month names are written out only in English; Vietnamese and Chinese dates use numbers.
MONTHS_EN: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
