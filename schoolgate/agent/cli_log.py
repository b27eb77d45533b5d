"""``schoolgate-agent log``: search the activity log this agent keeps.

Reads ``STATE_DIR/activity/events.sqlite`` while the agent writes it (WAL: neither waits for
the other) and never creates it. The newest ``--limit`` events that match are printed oldest
first, as a table for people, CSV for a spreadsheet or JSON lines for scripts; ``--limit 0``
pages through every match, oldest first, a few thousand at a time.

Times given to ``--since`` and ``--until`` are the site's local time (``site.timezone``), or a
span back from now (``2h``, ``30m``, ``7d``); the table shows local time, CSV and JSON UTC in
ISO 8601.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import ipaddress
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Final, TextIO

import msgspec

from schoolgate.agent.activity.events import EventKind, StoredEvent
from schoolgate.agent.activity.pseudonyms import PREFIX, PseudonymKeyError, Pseudonyms, load_key
from schoolgate.agent.activity.store import (
    COLUMNS,
    ActivityStore,
    ActivityStoreError,
    EventFilter,
)
from schoolgate.agent.config import AgentConfig
from schoolgate.agent.policy.decision import Action
from schoolgate.agent.policy.identity import normalize_mac

EXIT_RUNTIME: Final = 1
PAGE: Final = 5_000
ACTIONS: Final = (*(a.value for a in Action), "rewrite")
PSEUDONYM: Final = re.compile(re.escape(PREFIX) + "[0-9a-f]{16}")
_SPAN: Final = re.compile(r"(\d+)\s*([smhdw])")
_SPAN_SECONDS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
# The store's columns, as an event names them, after the sequence number (no reversed name).
CSV_COLUMNS: Final = (
    "seq",
    *("group" if c == "grp" else c for c in COLUMNS if c != "rname"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client", action="append", default=[], metavar="WHO", help="an IP, MAC or device name"
    )
    parser.add_argument("--group", default="", metavar="GROUP")
    parser.add_argument(
        "--name", default="", metavar="NAME", help="this name and every name below it"
    )
    parser.add_argument("--category", default="", metavar="CATEGORY")
    parser.add_argument("--action", default="", choices=ACTIONS)
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=[k.value for k in EventKind],
        help="only events of this kind (repeatable; default: all)",
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="'YYYY-MM-DD[ HH:MM]' local time, or a span back: 2h"
    )
    parser.add_argument("--until", metavar="WHEN", help="as --since; not included")
    parser.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help="the newest N matches (default 100; 0: every match)",
    )
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"])


class LogArgumentError(ValueError):
    """A search that cannot be made; the message says why."""


def moment(text: str, config: AgentConfig, now: float) -> float:
    """Seconds since the epoch for a ``--since`` or ``--until`` value."""
    text = text.strip()
    span = _SPAN.fullmatch(text)
    if span is not None:
        return now - int(span.group(1)) * _SPAN_SECONDS[span.group(2)]
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            local = dt.datetime.strptime(text, form)
        except ValueError:
            continue
        if config.timezone is not None:
            return local.replace(tzinfo=config.timezone).timestamp()
        # The machine's zone, with the offset of that date (summer time or not), not today's.
        return local.astimezone().timestamp()
    raise LogArgumentError(
        f"{text!r}: expected 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM' or a span such as 2h, 30m, 7d"
    )


def client_forms(clients: list[str], config: AgentConfig) -> tuple[str, ...]:
    """What a device may be stored as: its address in the form the agent writes it, its MAC
    as ``aa:bb:cc:dd:ee:ff``, its name in lowercase, and, whenever the site has a pseudonym key
    (pseudonymised now or before), each one's pseudonym too."""
    forms: list[str] = []
    for given in clients:
        value = given.strip().lower()
        with contextlib.suppress(ValueError):
            value = ipaddress.ip_address(value).compressed
        forms.append(normalize_mac(value) or value)
    try:
        key = load_key(config.state_dir, create=False)
    except PseudonymKeyError as exc:
        raise LogArgumentError(str(exc)) from None
    if key is None:
        if config.activity.pseudonymise:
            print(
                "note: activity.pseudonymise is on but no pseudonym key exists yet, so nothing"
                " has been stored pseudonymised: searching as given",
                file=sys.stderr,
            )
        return tuple(dict.fromkeys(forms))
    hide = Pseudonyms(key)
    forms += [hide(f) for f in forms if not PSEUDONYM.fullmatch(f)]
    return tuple(dict.fromkeys(forms))


def run(config: AgentConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    store = ActivityStore(config.state_dir)
    if not store.path.exists():
        print(
            f"no activity recorded yet: {store.path} does not exist (the state directory of"
            f" {config.source})",
            file=sys.stderr,
        )
        return 0
    if args.limit < 0:
        print("schoolgate-agent: --limit must be 0 or more", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        where = EventFilter(
            kinds=tuple(EventKind(k) for k in args.kind),
            clients=client_forms(args.client, config),
            group=args.group,
            name=args.name,
            category=args.category,
            action=args.action,
            since=moment(args.since, config, _now()) if args.since else None,
            until=moment(args.until, config, _now()) if args.until else None,
        )
    except LogArgumentError as exc:
        print(f"schoolgate-agent: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        found = _matches(store, where, args.limit)
        shown = _print(found, args.format, config, out)
    except ActivityStoreError as exc:
        print(f"schoolgate-agent: cannot read the activity log: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        store.close()
    if args.format == "table" and not shown:
        print("no events match", file=sys.stderr)
    return 0


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _matches(store: ActivityStore, where: EventFilter, limit: int) -> Iterator[StoredEvent]:
    if limit:
        yield from reversed(store.search(where, limit=limit, newest_first=True))
        return
    after = 0
    while True:
        page = store.search(replace(where, after_seq=after), limit=PAGE, newest_first=False)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def _print(found: Iterator[StoredEvent], form: str, config: AgentConfig, out: TextIO) -> int:
    if form == "json":
        return _print_json(found, out)
    if form == "csv":
        return _print_csv(found, out)
    return _print_table(found, config, out)


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def _record(stored: StoredEvent) -> dict[str, Any]:
    e = stored.event
    found: dict[str, Any] = {"seq": stored.seq}
    found.update(msgspec.to_builtins(e))
    found["time"] = _iso(e.time)  # ISO 8601 in UTC: what a script or a spreadsheet reads
    return found


def _print_json(found: Iterator[StoredEvent], out: TextIO) -> int:
    count = 0
    for stored in found:
        out.write(msgspec.json.encode(_record(stored)).decode() + "\n")
        count += 1
    return count


# A cell a spreadsheet would run as a formula: a DNS label can start with any of these.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = msgspec.json.encode(value).decode() if value else ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _print_csv(found: Iterator[StoredEvent], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for stored in found:
        record = _record(stored)
        writer.writerow([_cell(record.get(c)) for c in CSV_COLUMNS])
        count += 1
    return count


def _print_table(found: Iterator[StoredEvent], config: AgentConfig, out: TextIO) -> int:
    zone = config.timezone
    count = 0
    for stored in found:
        e = stored.event
        when = dt.datetime.fromtimestamp(e.time, zone).strftime("%Y-%m-%d %H:%M:%S")
        device = e.hostname or e.client_ip or e.mac or "-"
        what = e.action or (e.severity.value if e.severity else "")
        if e.kind is EventKind.ALERT and e.severity is not None:
            what = f"ALERT {e.severity.value}"
        elif e.kind is not EventKind.DNS:
            what = e.kind.value.upper() + (f" {what}" if what else "")
        detail = ",".join(e.categories)
        if e.kind is EventKind.DNS:
            detail = " ".join(x for x in (detail, e.rcode) if x)
        elif e.data:
            extra = " ".join(f"{k}={v}" for k, v in e.data.items())
            detail = " ".join(x for x in (detail, extra) if x)
        out.write(
            f"{when}  {device:<17} {e.group or '-':<10} {what:<12} {e.qtype or '-':<6}"
            f" {e.name or '-'}  {detail}\n".rstrip()
            + "\n"
        )
        count += 1
    return count
