"""Readers for the list formats schools meet: plain domains, hosts files, adblock rules and URLs.

A reader never fails on content: comments and blank lines are skipped, every other line either
yields a name or is counted (invalid, or syntax we do not support) with a few examples kept for
the report. Only an unreadable file is an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from schoolgate.agent.filter.names import InvalidName, normalize

_EXAMPLES_KEPT: Final = 5
# Hosts-file addresses that mean "nowhere": only these lines are blocking entries.
_NULL_ADDRESSES: Final = frozenset(
    {ipaddress.ip_address(a) for a in ("0.0.0.0", "127.0.0.1", "::", "::1")}
)
# Names every hosts file defines for the machine itself; they are not entries.
_HOSTS_BOILERPLATE: Final = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)


class ListFormat(StrEnum):
    AUTO = "auto"
    DOMAINS = "domains"
    HOSTS = "hosts"
    ADBLOCK = "adblock"
    # A URL list, as licensed feeds deliver: only whole-site entries can be blocked by DNS.
    URLS = "urls"
    # A UT1 category tarball: the archive's domains file, one name a line.
    UT1 = "ut1"


@dataclass
class ParseReport:
    """What a reader made of one list."""

    lines: int = 0
    entries: int = 0
    comments: int = 0
    invalid: int = 0
    unsupported: int = 0
    skipped: int = 0
    format: ListFormat = ListFormat.AUTO
    examples: list[str] = field(default_factory=list)
    fewest_labels: int = 255
    most_labels: int = 0
    # Licensed feeds (the locked categories) must not have their lines copied into reports.
    confidential: bool = False

    def note(self, lineno: int, line: str, reason: str) -> None:
        if self.confidential:
            if not self.examples:
                self.examples.append("(examples withheld: this list is confidential)")
            return
        if len(self.examples) < _EXAMPLES_KEPT:
            self.examples.append(f"line {lineno}: {reason}: {line[:80]!r}")


def detect_format(lines: Iterable[str]) -> ListFormat:
    """Guess the format from the first meaningful lines: the form most of them take wins."""
    votes = {ListFormat.DOMAINS: 0, ListFormat.HOSTS: 0, ListFormat.ADBLOCK: 0}
    for line in lines:
        text = line.strip()
        if not text or text[0] == "#":
            continue
        if text[0] == "!" or text.startswith(("[Adblock", "||", "@@", "|http")):
            votes[ListFormat.ADBLOCK] += 1
            continue
        try:
            ipaddress.ip_address(text.split(None, 1)[0])
        except ValueError:
            votes[ListFormat.DOMAINS] += 1
        else:
            votes[ListFormat.HOSTS] += 1
    return max(votes, key=lambda fmt: votes[fmt])


def parse_lines(lines: Iterable[str], fmt: ListFormat, report: ParseReport) -> Iterator[str]:
    """Yield normalized names from ``lines`` in format ``fmt``, counting into ``report``."""
    report.format = fmt
    parse_line = _PARSERS[fmt]
    for lineno, line in enumerate(lines, 1):
        report.lines += 1
        text = line.strip()
        if not text or text[0] == "#":
            report.comments += 1
            continue
        for outcome in parse_line(text):
            if isinstance(outcome, str):
                report.entries += 1
                yield outcome
            else:
                kind, reason = outcome
                if kind == "comment":
                    report.comments += 1
                    continue
                if kind == "skipped":
                    report.skipped += 1
                    continue
                if kind == "invalid":
                    report.invalid += 1
                else:
                    report.unsupported += 1
                report.note(lineno, text, reason)


_Outcome = str | tuple[str, str]


def _checked(raw: str) -> _Outcome:
    try:
        return normalize(raw)
    except InvalidName as exc:
        return ("invalid", str(exc))


def _domains_line(text: str) -> Iterator[_Outcome]:
    text = text.split("#", 1)[0].strip()
    if not text:
        yield ("comment", "")
        return
    parts = text.split()
    if len(parts) != 1:
        yield ("invalid", "more than one word on a domains line")
        return
    yield _checked(parts[0])


def _hosts_line(text: str) -> Iterator[_Outcome]:
    text = text.split("#", 1)[0].strip()
    if not text:
        yield ("comment", "")
        return
    parts = text.split()
    try:
        address = ipaddress.ip_address(parts[0].split("%", 1)[0])
    except ValueError:
        yield ("invalid", "hosts line does not start with an address")
        return
    if len(parts) == 1:
        yield ("invalid", "address without a name")
        return
    if address not in _NULL_ADDRESSES:
        yield ("unsupported", "hosts entry points at a real address, not a null one")
        return
    for name in parts[1:]:
        if name.lower() in _HOSTS_BOILERPLATE:
            yield ("skipped", "")
        else:
            yield _checked(name)


def _adblock_line(text: str) -> Iterator[_Outcome]:
    if text[0] == "!" or (text[0] == "[" and text.endswith("]")):
        yield ("comment", "")
        return
    if text.startswith("@@"):
        yield ("unsupported", "exception rules are not supported")
        return
    if not text.startswith("||"):
        yield ("unsupported", "only ||domain^ rules are supported")
        return
    body = text[2:]
    name, sep, rest = body.partition("^")
    if not sep:
        yield ("unsupported", "rule without ^ separator")
        return
    # Options that do not narrow a DNS rule are accepted; anything else changes its meaning.
    if rest and rest not in ("$important", "|", "$all", "$doc", "$document"):
        yield ("unsupported", f"rule options are not supported: {rest[:30]}")
        return
    if any(c in name for c in "/*|$:"):
        yield ("unsupported", "rule is not a plain domain")
        return
    yield _checked(name)


def _urls_line(text: str) -> Iterator[_Outcome]:
    text = text.split(None, 1)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        rest = scheme
    elif scheme.lower() not in ("http", "https"):
        yield ("unsupported", f"not an http or https URL: {scheme[:10]}")
        return
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1:
            end = min(end, at)
    host, tail = rest[:end], rest[end:]
    if tail not in ("", "/"):
        # Blocking the whole host would block far more than the one page the entry names.
        yield ("unsupported", "a URL with a path: DNS can only block whole sites")
        return
    host = host.rpartition("@")[2]
    if host.startswith("["):
        yield ("invalid", "an IP address, not a name")
        return
    yield _checked(host.rsplit(":", 1)[0] if host.count(":") == 1 else host)


_PARSERS: Final = {
    ListFormat.DOMAINS: _domains_line,
    ListFormat.HOSTS: _hosts_line,
    ListFormat.ADBLOCK: _adblock_line,
    ListFormat.URLS: _urls_line,
    ListFormat.UT1: _domains_line,
}
