"""The admin pages' languages: English, Vietnamese and Simplified Chinese.

English strings are the message ids, written in the templates and page modules as
``_("Open alerts")``; ``locales/<code>.po`` hold the translations, read once at start with
Babel (no compile step, nothing generated to keep in step). A message missing from a
catalogue shows in English, and a test checks that none is missing.

A person picks a language with ``?lang=vi`` once (kept in a cookie); without one, the
browser's ``Accept-Language`` decides. Numbers and dates are formatted the language's way
by Babel too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import cache
from pathlib import Path
from typing import Any, Final

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent

LANGUAGES: Final = {"en": "English", "vi": "Tiếng Việt", "zh": "简体中文"}
DEFAULT: Final = "en"
# Babel's names for the languages the interface offers (zh is shown in simplified script).
_LOCALES: Final = {"en": "en_GB", "vi": "vi_VN", "zh": "zh_Hans_CN"}
_LOCALE_DIR: Final = Path(__file__).parent / "locales"
_QUALITY = re.compile(r"^\s*q\s*=\s*([0-9.]+)\s*$")


@cache
def catalogue(language: str) -> Mapping[str, str]:
    """The translations of ``language`` (empty for English): message id to text."""
    if language == DEFAULT:
        return {}
    with (_LOCALE_DIR / f"{language}.po").open("rb") as f:
        messages = read_po(f, locale=_LOCALES[language])
    return {
        str(m.id): str(m.string)
        for m in messages
        if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string
    }


def from_accept_language(header: str) -> str:
    """The first of our languages the browser asks for, by its preference; English else."""
    wanted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, rest = part.partition(";")
        quality = 1.0
        if rest.strip():
            # A weight that cannot be read drops its language rather than guessing.
            match = _QUALITY.match(rest)
            try:
                quality = float(match.group(1)) if match else -1.0
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            wanted.append((-quality, index, primary))
    return min(wanted)[2] if wanted else DEFAULT


@dataclass(frozen=True)
class Translator:
    """Messages, numbers and times in one language, times shown in one zone."""

    language: str
    zone: tzinfo

    @property
    def locale(self) -> Locale:
        return _locale(self.language)

    @property
    def zone_name(self) -> str:
        return str(getattr(self.zone, "key", None) or self.zone)

    def gettext(self, message: str, /, **values: Any) -> str:
        """``message`` translated, with ``%(name)s`` filled from ``values``. The result is
        plain text: templates escape it (and the values) like any other string."""
        text = catalogue(self.language).get(message, message)
        return text % values if values else text

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.locale)

    def percent(self, share: float) -> str:
        return format_percent(share, format="#,##0.#%", locale=self.locale)

    def when(self, seconds: float | None) -> str:
        """A moment as the people reading it say it, in the collector's zone."""
        if seconds is None:
            return "-"
        moment = datetime.fromtimestamp(seconds, self.zone)
        return format_datetime(moment, "medium", tzinfo=self.zone, locale=self.locale)

    def duration(self, seconds: float | None) -> str:
        """A length of time in the reader's words, to its largest unit ("3 hours")."""
        if seconds is None:
            return ""
        length = timedelta(seconds=max(seconds, 1.0))
        return format_timedelta(length, threshold=1.5, format="long", locale=self.locale)

    def day(self, seconds: float) -> str:
        return format_date(datetime.fromtimestamp(seconds, self.zone), "medium", locale=self.locale)

    def short_day(self, seconds: float) -> str:
        moment = datetime.fromtimestamp(seconds, self.zone)
        return format_date(moment, "d MMM", locale=self.locale)


@cache
def _locale(language: str) -> Locale:
    return Locale.parse(_LOCALES.get(language, _LOCALES[DEFAULT]))
