"""What a message says: hostile text made harmless, subjects, reasons, long lists cut."""

from __future__ import annotations

from datetime import UTC

from schoolgate.server.notify.compose import (
    DIGEST,
    IMMEDIATE,
    MAX_LISTED,
    TEST,
    Alert,
    Draft,
    Style,
    clean,
    email_text,
    header,
    subject,
    webhook_payload,
)

STYLE = Style(zone=UTC, link="", cap=10, digest_at="07:30")


def test_clean_escapes_what_could_break_or_hide_a_line() -> None:
    assert clean("plain-name.example") == "plain-name.example"
    assert clean("<img src=x onerror=alert(1)>") == "<img src=x onerror=alert(1)>"
    assert clean("a\r\nb\tc\x1b[31m") == "a\\x0d\\x0ab\\x09c\\x1b[31m"
    assert clean("abc\u202etxt.exe\u200b") == "abc\\u202etxt.exe\\u200b"
    assert clean("école.example") == "école.example"  # letters are letters
    assert clean("x" * 300) == "x" * 255 + "..."


def test_a_header_is_one_short_line() -> None:
    assert header("a\r\nBcc: x@y.example") == "a\\x0d\\x0aBcc: x@y.example"
    assert header("many    spaces\u2028here") == "many spaces\\u2028here"
    assert len(header("y" * 500)) == 160


def test_subjects() -> None:
    one = Alert(seq=1, time=0.0, severity="critical", category="csam")
    device = Alert(seq=2, time=0.0, severity="medium", data={"reason": "unapproved-device"})
    assert subject(Draft(1, "north", IMMEDIATE, [one])) == (
        "[schoolgate] north: critical alert, csam"
    )
    assert subject(Draft(1, "north", IMMEDIATE, [device])) == (
        "[schoolgate] north: medium alert, a device the school has not approved"
    )
    assert subject(Draft(1, "north", IMMEDIATE, [device, one])) == (
        "[schoolgate] north: 2 alerts, the most severe critical"
    )
    assert subject(Draft(1, "north", DIGEST, [one])) == "[schoolgate] north: daily digest, 1 alert"
    assert subject(Draft(0, "north", TEST, [])) == "[schoolgate] north: test message"


def test_reasons_without_a_category_are_written_out() -> None:
    repeated = Alert(
        seq=1,
        time=0.0,
        severity="medium",
        category="games",
        client_ip="10.0.0.9",
        data={"reason": "repeated-attempts", "blocked": 20, "minutes": 5.0},
    )
    device = Alert(
        seq=2,
        time=60.0,
        severity="medium",
        mac="aa:bb:cc:dd:ee:ff",
        data={"reason": "unapproved-device", "vendor": "Raspberry Pi Trading"},
    )
    text = email_text(Draft(7, "north", IMMEDIATE, [device, repeated]), STYLE)
    assert text.startswith(
        "2 alerts at north.\n"
        "\n"
        "MEDIUM: games\n"
        "  Time:       1970-01-01 00:00:00 UTC\n"
        "  Device:     10.0.0.9\n"
        "  Reason:     20 blocked lookups within 5 minutes\n"
        "\n"
        "MEDIUM: a device the school has not approved\n"
        "  Time:       1970-01-01 00:01:00 UTC\n"
        "  Device:     aa:bb:cc:dd:ee:ff\n"
        "  Reason:     a device the school has not approved (maker: Raspberry Pi Trading)\n"
        "\n-- \n"
    )


def test_a_flood_is_listed_in_part_and_counted() -> None:
    many = [Alert(seq=i, time=float(i), severity="low", category="games") for i in range(250)]
    draft = Draft(3, "north", DIGEST, many, held=40)
    text = email_text(draft, STYLE)
    assert text.count("LOW: games") == MAX_LISTED
    assert "\n...and 50 more: see the alert inbox.\n" in text
    assert "40 alerts were held back from immediate messages by the daily limit of 10" in text
    payload = webhook_payload(draft, STYLE, 0.0)
    assert payload["count"] == 250 and len(payload["alerts"]) == MAX_LISTED
    assert payload["held_back"] == 40 and payload["link"] is None
