"""Which language to answer in, and how a moment reads in it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

from schoolgate.agent.blockpage.texts import LANGUAGES, MONTHS_EN, TEXTS

# A browser sends a handful of ranges; the rest of a long header is noise or an attack.
_MAX_RANGES: Final = 32
_MAX_HEADER: Final = 1024


def choose_language(accept_language: str | None, default: str) -> str:
    """The language of ``Accept-Language`` (RFC 9110) that the page speaks, highest q first.

    Any Chinese range maps to the Simplified Chinese texts, the only Chinese there is; ``*`` and
    languages the page does not speak leave the choice to ``default``.
    """
    if not accept_language:
        return default
    best: str | None = None
    best_q = 0.0
    for item in accept_language[:_MAX_HEADER].split(",")[:_MAX_RANGES]:
        tag, _, params = item.partition(";")
        language = tag.strip().lower().split("-", 1)[0]
        if language not in LANGUAGES:
            continue
        q = _quality(params)
        # Strictly greater: among equal weights the browser's first choice wins.
        if q > best_q:
            best, best_q = language, q
    return best or default


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if math.isfinite(q) and 0.0 <= q <= 1.0 else 0.0
    return 1.0


def format_time(moment: datetime, language: str) -> str:
    """'21 November 2026 14:05', '14:05, ngày 21 tháng 11 năm 2026', '2026年11月21日 14:05'."""
    return TEXTS[language]["time_format"].format(
        day=moment.day,
        month=moment.month,
        month_name=MONTHS_EN[moment.month - 1],
        year=moment.year,
        hour=moment.hour,
        minute=moment.minute,
    )
