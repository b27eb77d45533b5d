"""Names from the Host header and the form: only plain DNS names get through."""

from __future__ import annotations

import pytest

from schoolgate.agent.blockpage.hosts import name_from_host, name_from_text


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("blocked.example", "blocked.example"),
        ("Blocked.EXAMPLE", "blocked.example"),
        ("blocked.example.", "blocked.example"),
        ("blocked.example:8080", "blocked.example"),
        ("www.xn--bcher-kva.example", "www.xn--bcher-kva.example"),
        ("_dmarc.example", "_dmarc.example"),
        ("localhost", "localhost"),
    ],
)
def test_names(host: str, name: str) -> None:
    assert name_from_host(host) == name


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "<script>alert(1)</script>.example",
        "a b.example",
        "bad\x00.example",
        "bad\r\nSet-Cookie: x=1",
        "café.example",
        "*.example",
        "10.20.0.53",
        "10.20.0.53:80",
        "[::1]",
        "[::1]:80",
        "blocked.example:",
        "blocked.example:123456",
        "blocked.example:80:80",
        "a..example",
        "-bad.example",
        "xn--zz.example",  # not valid punycode
        "a" * 64 + ".example",
        ".".join(["abcdefghi"] * 30),  # over 253 characters
        "x" * 10_000,
    ],
)
def test_hostile_or_unusable_hosts(host: str | None) -> None:
    assert name_from_host(host) is None


def test_form_names_have_no_port() -> None:
    assert name_from_text("blocked.example") == "blocked.example"
    assert name_from_text("blocked.example:80") is None
    assert name_from_text("") is None
