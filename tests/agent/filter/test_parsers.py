"""Readers for plain domain lists, hosts files and adblock rules."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolgate.agent.filter.names import normalize
from schoolgate.agent.filter.parsers import ListFormat, ParseReport, detect_format, parse_lines

PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def parse(text: str, fmt: ListFormat) -> tuple[list[str], ParseReport]:
    report = ParseReport()
    names = list(parse_lines(text.splitlines(keepends=True), fmt, report))
    return names, report


def counts(report: ParseReport) -> dict[str, int]:
    return {
        "lines": report.lines,
        "entries": report.entries,
        "comments": report.comments,
        "invalid": report.invalid,
        "unsupported": report.unsupported,
        "skipped": report.skipped,
    }


# --- plain domain lists --------------------------------------------------------------------------


def test_domains_list() -> None:
    names, report = parse(
        "# a list of sites\n"
        "\n"
        "Example.COM\n"
        "www.example.org.   # trailing comment\n"
        "*.ads.example\n"
        "bücher.example\n"
        "   \n"
        "#another comment\n",
        ListFormat.DOMAINS,
    )
    assert names == ["example.com", "www.example.org", "ads.example", "xn--bcher-kva.example"]
    assert report.format is ListFormat.DOMAINS
    assert counts(report) == {
        "lines": 8,
        "entries": 4,
        "comments": 4,  # blank lines are counted with comments
        "invalid": 0,
        "unsupported": 0,
        "skipped": 0,
    }
    assert report.examples == []


def test_domains_invalid_lines_are_counted_with_line_numbers() -> None:
    names, report = parse(
        "good.example\n"
        "two words.example here\n"
        "bad..example\n"
        "192.0.2.1\n"
        "-dash.example\n"
        "fine.example\n",
        ListFormat.DOMAINS,
    )
    assert names == ["good.example", "fine.example"]
    assert report.invalid == 4
    assert report.entries == 2
    assert report.examples[0].startswith("line 2: more than one word")
    assert report.examples[1].startswith("line 3: empty label")
    assert report.examples[2].startswith("line 4: an IP address")
    assert report.examples[3].startswith("line 5: label starts or ends with a hyphen")


def test_only_five_examples_are_kept() -> None:
    text = "".join(f"bad{i}..example\n" for i in range(20))
    names, report = parse(text, ListFormat.DOMAINS)
    assert names == []
    assert report.invalid == 20
    assert len(report.examples) == 5
    assert report.examples[-1].startswith("line 5:")


def test_long_lines_are_shortened_in_examples() -> None:
    _, report = parse("x" * 500 + " y\n", ListFormat.DOMAINS)
    assert report.invalid == 1
    assert report.examples[0] == ("line 1: more than one word on a domains line: " + repr("x" * 80))


# --- hosts files ---------------------------------------------------------------------------------


def test_hosts_file() -> None:
    names, report = parse(
        "# hosts file\n"
        "127.0.0.1 localhost\n"
        "127.0.0.1 localhost.localdomain local\n"
        "255.255.255.255 broadcasthost\n"
        "::1 localhost ip6-localhost ip6-loopback\n"
        "fe00::0 ip6-localnet\n"
        "0.0.0.0 0.0.0.0\n"
        "0.0.0.0 ads.example\n"
        "127.0.0.1 tracker.example  # inline comment\n"
        ":: v6.example\n"
        "::1 v6-loopback.example\n"
        "0.0.0.0\tTabbed.Example  several.example names.example\n"
        "192.168.1.1 router.lan\n"
        "0.0.0.0\n"
        "not-an-address example.com\n"
        "0.0.0.0 bad..name\n",
        ListFormat.HOSTS,
    )
    assert names == [
        "ads.example",
        "tracker.example",
        "v6.example",
        "v6-loopback.example",
        "tabbed.example",
        "several.example",
        "names.example",
    ]
    assert report.entries == 7
    # localhost, localhost.localdomain, local, localhost, ip6-localhost, ip6-loopback, 0.0.0.0
    assert report.skipped == 7
    # 255.255.255.255, fe00::0 and 192.168.1.1 point at real addresses.
    assert report.unsupported == 3
    assert report.invalid == 3
    assert report.comments == 1
    assert report.lines == 16
    reasons = "\n".join(report.examples)
    assert "line 4: hosts entry points at a real address" in reasons
    assert "line 14: address without a name" in reasons


def test_hosts_file_scoped_address() -> None:
    names, report = parse("fe80::1%lo0 router.example\n::1%lo0 v6.example\n", ListFormat.HOSTS)
    assert names == ["v6.example"]
    assert report.unsupported == 1


def test_hosts_boilerplate_is_case_insensitive() -> None:
    names, report = parse("127.0.0.1 LocalHost\n0.0.0.0 BroadcastHost\n", ListFormat.HOSTS)
    assert names == []
    assert report.skipped == 2


# --- adblock rules -------------------------------------------------------------------------------


def test_adblock_rules() -> None:
    names, report = parse(
        "[Adblock Plus 2.0]\n"
        "! Title: test list\n"
        "# also a comment\n"
        "||ads.example^\n"
        "||Tracker.Example.COM^$important\n"
        "||pipe.example^|\n"
        "||all.example^$all\n"
        "||doc.example^$document\n"
        "||doc2.example^$doc\n",
        ListFormat.ADBLOCK,
    )
    assert names == [
        "ads.example",
        "tracker.example.com",
        "pipe.example",
        "all.example",
        "doc.example",
        "doc2.example",
    ]
    assert report.comments == 3
    assert report.unsupported == 0
    assert report.invalid == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("@@||good.example^", "exception rules"),
        ("example.com##.advert", "only ||domain^ rules"),
        ("/banner[0-9]+/", "only ||domain^ rules"),
        ("|https://ads.example/", "only ||domain^ rules"),
        ("ads.example", "only ||domain^ rules"),
        ("||ads.example", "without ^"),
        ("||ads.example^$third-party", "options are not supported"),
        ("||ads.example^$important,third-party", "options are not supported"),
        ("||ads.example/path^", "not a plain domain"),
        ("||*.ads.example^", "not a plain domain"),
        ("||ads.example:8080^", "not a plain domain"),
    ],
)
def test_unsupported_adblock_syntax_is_counted(line: str, reason: str) -> None:
    names, report = parse(line + "\n||ok.example^\n", ListFormat.ADBLOCK)
    assert names == ["ok.example"]
    assert report.unsupported == 1
    assert report.invalid == 0
    assert reason in report.examples[0]
    assert report.examples[0].startswith("line 1:")


def test_adblock_rule_with_a_bad_name_is_invalid() -> None:
    names, report = parse("||bad..example^\n||-x.example^\n", ListFormat.ADBLOCK)
    assert names == []
    assert report.invalid == 2
    assert report.unsupported == 0


# --- format detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["# list", "example.com", "example.org"], ListFormat.DOMAINS),
        (["# hosts", "127.0.0.1 localhost", "0.0.0.0 ads.example"], ListFormat.HOSTS),
        (["::1 localhost", ":: ads.example"], ListFormat.HOSTS),
        (["[Adblock Plus 2.0]", "! comment", "||ads.example^"], ListFormat.ADBLOCK),
        (["@@||good.example^", "|https://x.example/"], ListFormat.ADBLOCK),
        (["0.0.0.0 a.example", "0.0.0.0 b.example", "c.example"], ListFormat.HOSTS),
        (["0.0.0.0 a.example", "b.example", "c.example"], ListFormat.DOMAINS),
        (["||a.example^", "||b.example^", "0.0.0.0 c.example"], ListFormat.ADBLOCK),
        ([], ListFormat.DOMAINS),
        (["# only", "# comments", "", "   "], ListFormat.DOMAINS),
    ],
)
def test_detect_format_votes(lines: list[str], expected: ListFormat) -> None:
    assert detect_format(lines) is expected


def test_detect_format_ignores_comment_lines() -> None:
    lines = ["# 0.0.0.0 a.example"] * 10 + ["a.example"]
    assert detect_format(lines) is ListFormat.DOMAINS


# --- never fatal ---------------------------------------------------------------------------------

_line = st.text(
    st.sampled_from(list("abcXYZ019.-_*|^$@!#[]/: \t%ü")) | st.characters(), max_size=40
)


@PROPERTY
@given(lines=st.lists(_line, max_size=30))
def test_any_content_is_counted_never_fatal(lines: list[str]) -> None:
    for fmt in (ListFormat.DOMAINS, ListFormat.HOSTS, ListFormat.ADBLOCK):
        report = ParseReport()
        names = list(parse_lines(lines, fmt, report))
        assert report.entries == len(names)
        assert report.lines == len(lines)
        assert len(report.examples) <= 5
        assert len(report.examples) == min(5, report.invalid + report.unsupported)
        outcomes = (
            report.entries + report.comments + report.invalid + report.unsupported + report.skipped
        )
        if fmt is ListFormat.HOSTS:
            assert outcomes >= report.lines  # a hosts line may carry several names
        else:
            assert outcomes == report.lines
        for name in names:
            assert normalize(name) == name
    detect_format(lines)
