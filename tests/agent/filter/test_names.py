"""List entries turned into the one name form the matcher knows."""

from __future__ import annotations

import re

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolgate.agent.dns.wire import encode_name as to_wire
from schoolgate.agent.dns.wire import text_to_wire
from schoolgate.agent.filter.names import (
    InvalidName,
    fingerprint,
    name_fingerprint,
    normalize,
)

PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  www.example.com \n", "www.example.com"),
        ("*.example.com", "example.com"),
        ("*.Example.com.", "example.com"),
        ("_dmarc.Example.com", "_dmarc.example.com"),
        ("a_b.example", "a_b.example"),
        ("x-y.example", "x-y.example"),
        ("localhost", "localhost"),
        ("123.example", "123.example"),
        ("1.2.3", "1.2.3"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("WWW.BÜCHER.example.", "www.xn--bcher-kva.example"),
        ("mañana.com", "xn--maana-pta.com"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008, not transitional: ß stays
        ("例え.jp", "xn--r8jz45g.jp"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # full-width letters
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.Example", "xn--bcher-kva.example"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected
    assert normalize(expected) == expected


def test_longest_allowed_name_is_253_characters() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253
    assert normalize(name) == name
    assert len(text_to_wire(name)) == 255


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty name"),
        ("   ", "empty name"),
        (".", "empty name"),
        ("*.", "not allowed"),
        ("a..b", "two dots in a row"),
        (".example.com", "two dots in a row"),
        ("a" * 64 + ".com", "longer than 63"),
        (".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62]), "longer than 253"),
        ("foo bar.example", "not allowed in a name: ' '"),
        ("exa$mple.com", "'$'"),
        ("example.com/path", "'/'"),
        ("http://example.com", "not allowed"),
        ("*.*.example.com", "'*'"),
        ("::1", "':'"),
        ("192.168.0.1", "an IP address"),
        ("0.0.0.0", "an IP address"),
        ("-abc.example", "hyphen"),
        ("abc-.example", "hyphen"),
        ("xn--a.example", "not valid punycode"),
        ("xn--.example", "not valid punycode"),
        ("xn--ls8h.example", "not valid punycode"),  # an emoji: not allowed by IDNA 2008
        ("a..ü", "not a valid internationalised name"),
        ("☃.net", "not a valid internationalised name"),
        ("ü" * 70 + ".example", "not a valid internationalised name"),
    ],
)
def test_invalid_names_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidName) as info:
        normalize(raw)
    assert reason in str(info.value)


def test_invalid_name_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalize("bad name")


def test_to_wire_matches_the_dns_wire_form() -> None:
    assert to_wire("www.example.com") == b"\x03www\x07example\x03com\x00"
    assert to_wire("com") == b"\x03com\x00"
    assert to_wire("a_b.xn--bcher-kva.example") == text_to_wire("a_b.xn--bcher-kva.example")


def test_fingerprint_is_xxh3_64_of_the_wire_form_and_stable() -> None:
    wire = b"\x07example\x03com\x00"
    assert fingerprint(wire) == xxhash.xxh3_64_intdigest(wire)
    assert name_fingerprint("example.com") == fingerprint(wire)
    # Compiled files store these values: the function must never change.
    assert name_fingerprint("example.com") == 0x5A3CBB6549A15712
    assert name_fingerprint("example.org") != name_fingerprint("example.com")


@PROPERTY
@given(raw=st.text(max_size=80))
def test_normalize_raises_only_invalid_name_and_is_idempotent(raw: str) -> None:
    try:
        name = normalize(raw)
    except InvalidName as exc:
        assert str(exc)
        return
    assert normalize(name) == name
    assert re.fullmatch(r"[a-z0-9_.-]+", name)
    assert len(name) <= 253
    assert to_wire(name) == text_to_wire(name)


_host_label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1)


@PROPERTY
@given(
    labels=st.lists(_host_label.filter(lambda x: len(x) <= 63), min_size=1, max_size=4),
    trailing_dot=st.booleans(),
    wildcard=st.booleans(),
)
def test_host_names_normalize_to_lowercase(
    labels: list[str], trailing_dot: bool, wildcard: bool
) -> None:
    name = ".".join(labels)
    raw = ("*." if wildcard else "") + name + ("." if trailing_dot else "")
    if len(labels) == 4 and all(x.isdigit() for x in labels):
        with pytest.raises(InvalidName, match="IP address"):
            normalize(raw)
        return
    assert normalize(raw) == name.lower()
