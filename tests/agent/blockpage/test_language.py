"""Choosing the page's language, dates in each language, and the texts of every language."""

from __future__ import annotations

import string
from datetime import datetime

import pytest

from schoolgate.agent.blockpage.language import choose_language, format_time
from schoolgate.agent.blockpage.texts import LANGUAGES, TEXTS


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("vi-VN,vi;q=0.9,en-US;q=0.8,en;q=0.7", "vi"),
        ("zh-CN,zh;q=0.9", "zh"),
        ("zh-Hans", "zh"),
        ("zh", "zh"),
        ("ZH-hans-CN", "zh"),
        ("en-GB,en;q=0.9", "en"),
        ("fr-FR,fr;q=0.9,vi;q=0.5", "vi"),  # the first language the page speaks
        ("en;q=0.4, vi;q=0.8", "vi"),  # q-values, not order
        ("vi;q=0.5, zh;q=0.5", "vi"),  # equal weights: the browser's order
        ("vi;q=0, en;q=0.1", "en"),  # q=0 means "not this one"
        ("vi;q=0", "vi-default"),
        ("fr-FR,de;q=0.9", "vi-default"),
        ("*", "vi-default"),
        ("", "vi-default"),
        ("vi;q=abc, zh;q=2, en;q=nan", "vi-default"),  # broken weights count as q=0
        ("en ; q = 0.7 , vi ; Q=0.9", "vi"),
        (",,,;;;==", "vi-default"),
    ],
)
def test_accept_language(header: str, chosen: str) -> None:
    assert choose_language(header, "vi") == chosen.removesuffix("-default")
    if chosen.endswith("-default"):
        assert choose_language(header, "zh") == "zh"


def test_no_header_and_long_headers_give_the_default() -> None:
    assert choose_language(None, "en") == "en"
    assert choose_language("fr," * 10_000 + "vi", "en") == "en"  # nobody reads that far


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "21 November 2026 14:05"),
        ("vi", "14:05, ngày 21 tháng 11 năm 2026"),
        ("zh", "2026年11月21日 14:05"),
    ],
)
def test_time_in_each_language(language: str, text: str) -> None:
    assert format_time(datetime(2026, 11, 21, 14, 5), language) == text
    assert format_time(datetime(2027, 1, 3, 9, 7), "en") == "3 January 2027 09:07"


def test_every_text_exists_in_every_language() -> None:
    assert tuple(TEXTS) == LANGUAGES
    keys = set(TEXTS["en"])
    for language in LANGUAGES:
        assert set(TEXTS[language]) == keys, language
        for key, text in TEXTS[language].items():
            assert text.strip(), (language, key)


def test_translations_fill_in_the_same_blanks() -> None:
    def blanks(text: str) -> set[str]:
        return {field for _, field, _, _ in string.Formatter().parse(text) if field}

    for key, english in TEXTS["en"].items():
        for language in LANGUAGES:
            found = blanks(TEXTS[language][key])
            if key == "time_format":
                assert found <= {"day", "month", "month_name", "year", "hour", "minute"}
            else:
                assert found == blanks(english), (language, key)


def test_translations_are_translated() -> None:
    for key, english in TEXTS["en"].items():
        if key != "time_format":
            assert TEXTS["vi"][key] != english and TEXTS["zh"][key] != english, key
    # Texts are escaped when shown; markup in one would show as code on the page.
    for language in LANGUAGES:
        assert not any("<" in text or "&" in text for text in TEXTS[language].values())
