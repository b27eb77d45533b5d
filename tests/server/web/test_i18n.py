"""The interface's languages: every message translated, with the same placeholders, and the
language chosen by the browser or by the person."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schoolgate.server.web._i18n import Translator, catalogue, from_accept_language
from schoolgate.server.web._messages import extract, placeholders
from tests.server.test_admin_api_served import World
from tests.support.browser import Browser


@pytest.mark.parametrize("language", ["vi", "zh"])
def test_every_message_is_translated_with_its_placeholders(language: str) -> None:
    messages = extract()
    translated = catalogue(language)
    missing = sorted(m for m in messages if m not in translated)
    assert missing == [], f"run python -m schoolgate.server.web._messages and translate {missing}"
    wrong = {m: translated[m] for m in messages if placeholders(m) != placeholders(translated[m])}
    assert wrong == {}


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("vi-VN,vi;q=0.9,en;q=0.8", "vi"),
        ("zh-CN,zh;q=0.9", "zh"),
        ("zh-Hant-TW", "zh"),
        ("fr-FR,fr;q=0.9,en-GB;q=0.8", "en"),
        ("de;q=1, vi;q=0.2, zh;q=0.5", "zh"),
        ("vi;q=0", "en"),
        ("", "en"),
        ("vi;q=abc, zh", "zh"),
    ],
)
def test_the_browsers_languages_choose_ours(header: str, language: str) -> None:
    assert from_accept_language(header) == language


def test_numbers_and_times_are_written_the_languages_way() -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    assert Translator("en", zone).number(1234567) == "1,234,567"
    assert Translator("vi", zone).number(1234567) == "1.234.567"
    # 2026-11-20 01:30 UTC is 08:30 in Ho Chi Minh City.
    assert "08:30" in Translator("vi", zone).when(1_795_138_200.0)


def test_a_page_comes_in_the_language_asked_for(
    world: World, browser: Callable[..., Browser]
) -> None:
    vietnamese = browser("head", language="vi-VN,vi;q=0.9")
    page = vietnamese.get("/")
    assert page.status_code == 200
    assert '<html lang="vi">' in page.text
    assert catalogue("vi")["Overview"] in page.text
    # A choice made on the page outlasts the browser's own preference.
    chosen = vietnamese.get("/language", set="zh", next="/alerts")
    assert chosen.status_code == 303 and chosen.headers["location"] == "/alerts"
    assert '<html lang="zh">' in vietnamese.get("/").text
    assert vietnamese.get("/language", set="xx").status_code == 303
    assert '<html lang="zh">' in vietnamese.get("/").text
