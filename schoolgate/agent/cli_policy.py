"""The policy commands of ``schoolgate-agent``: ``policy show`` and ``policy test``.

``show`` prints what every group gets in every category, outside and inside its schedules.
``test`` is the school's annual filtering check (``policy_check``, which the running agent
also reports to the collector): one probe name per category goes through the decision code the
agent runs, for every group, and what happens is compared with what the configuration says
should. Both read the actions from ``AgentConfig.group_actions``: neither has a policy of its
own. Described in docs/policy.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import textwrap
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from schoolgate.agent.config import AgentConfig, GroupConfig
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.policy.categories import LANGUAGES, Category
from schoolgate.agent.policy.decision import Action
from schoolgate.agent.policy.exceptions import ExceptionError, ExceptionStore, PolicyException
from schoolgate.agent.policy.schedules import DAYS, DateRange, Schedule, Window
from schoolgate.agent.policy_check import (
    PolicyTest,
    PolicyTestError,
    categories_in_order,
    check_choices,
    policy_test,
)

EXIT_OK = 0
EXIT_USAGE = 2  # as cli.EXIT_CONFIG: a configuration or an argument that cannot be used
EXIT_MISMATCH = 4  # the filter does not do what the configuration says (or, --strict, untested)

WIDTH: Final = 100  # the widest terminal the text output is laid out for
SHORT: Final = {
    Action.ALLOW: "allow",
    Action.BLOCK: "BLOCK",
    Action.ALERT: "alert",
    Action.BLOCK_ALERT: "B+A",
}
LEGEND: Final = "actions: allow, BLOCK = block, alert = allow and alert, B+A = block and alert"

OpenLists = Callable[[AgentConfig, Path], tuple[CompiledLists, bool]]


def add_arguments(
    show: argparse.ArgumentParser,
    test: argparse.ArgumentParser,
    moment: Callable[[str], dt.datetime],
) -> None:
    """The options of ``policy show`` and ``policy test`` beyond the common ones."""
    show.add_argument("--format", default="text", choices=["text", "json"])
    show.add_argument("--language", default="en", choices=LANGUAGES)
    test.add_argument(
        "--client-of",
        dest="client_of",
        action="append",
        default=[],
        metavar="GROUP",
        help="check only this group (repeatable; default: every group)",
    )
    test.add_argument(
        "--at",
        type=moment,
        metavar="'YYYY-MM-DD HH:MM'",
        help="check as at this moment, in the site's time zone (default: now)",
    )
    test.add_argument("--format", default="text", choices=["text", "json"])
    test.add_argument(
        "--probe",
        dest="probes",
        action="append",
        type=probe_argument,
        default=[],
        metavar="CATEGORY=NAME",
        help="check CATEGORY with NAME, a name certainly in its lists (repeatable)",
    )
    test.add_argument(
        "--strict",
        action="store_true",
        help="fail when a category has no probe name",
    )


def probe_argument(text: str) -> tuple[str, str]:
    category, sep, name = text.partition("=")
    if not sep or not category.strip() or not name.strip():
        raise argparse.ArgumentTypeError("expected CATEGORY=NAME, e.g. games=roblox.com")
    try:
        return category.strip(), normalize(name)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(f"{name!r} is not a name: {exc}") from None


def run(args: argparse.Namespace, config: AgentConfig, open_lists: OpenLists) -> int:
    """``policy show`` or ``policy test``; ``open_lists`` is how ``check`` opens the lists."""
    if args.policy_command == "show":
        return show(config, args.format, args.language)
    return test(
        config,
        open_lists,
        groups=args.client_of,
        at=args.at,
        fmt=args.format,
        probes=args.probes,
        strict=args.strict,
    )


# policy show


def show(config: AgentConfig, fmt: str, language: str = "en") -> int:
    data = show_data(config, language)
    if fmt == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    zone = data["timezone"] or "the machine's own"
    print(f"configuration: {config.source}")
    print(f"time zone:     {zone}")
    if config.schedules:
        print("schedules:")
        width = max(len(s.name) for s in config.schedules)
        for s in config.schedules:
            _wrapped(f"{s.name.ljust(width)}  {_schedule_text(s)}", indent=4, hang=width + 6)
    print(LEGEND)
    print("OUTSIDE: outside every schedule; a schedule's column: while that schedule is on")
    for group in config.groups:
        print()
        _show_group(config, group, language)
    return EXIT_OK


def show_data(config: AgentConfig, language: str = "en") -> dict[str, Any]:
    """Everything ``policy show`` prints, as plain data (its JSON output)."""
    ordered = categories_in_order(config)
    return {
        "configuration": config.source,
        "timezone": str(config.timezone) if config.timezone else None,
        "language": language,
        "schedules": [_schedule_data(s) for s in config.schedules],
        "categories": [
            {"id": c.id, "tier": c.tier.value, "name": c.name(language), "site": c.site}
            for c in ordered
        ],
        "groups": [_group_data(config, g, ordered) for g in config.groups],
    }


def _group_data(config: AgentConfig, group: GroupConfig, ordered: list[Category]) -> dict[str, Any]:
    rule = group.rule
    return {
        "name": group.name,
        "default": group.default,
        "age_tier": group.age_tier.value,
        "order": rule.order,
        "members": {
            "addresses": [str(n) for n in rule.networks],
            "macs": sorted(rule.macs),
            "hostnames": list(rule.hostnames),
        },
        "allow": list(group.allow),
        "deny": list(group.deny),
        "settings": {key: value for key, _, value in _settings(group)},
        "actions": _action_values(config, group, ordered, frozenset()),
        "schedules": {
            name: _action_values(config, group, ordered, frozenset({name}))
            for name in _used_schedules(config, group)
        },
    }


def _settings(group: GroupConfig) -> list[tuple[str, str, str | list[str]]]:
    """A group's settings beside its category actions, as (JSON key, label, value): the one
    place a new per-group setting joins both outputs of ``policy show``."""
    return [
        ("safesearch", "safe search", list(group.safesearch)),
        ("youtube", "YouTube", group.youtube.value),
    ]


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else ", ".join(value) or "none"


def _show_group(config: AgentConfig, group: GroupConfig, language: str) -> None:
    title = f"group {group.name}: age tier {group.age_tier.value}"
    if group.rule.order:
        title += f", order {group.rule.order}"
    if group.default:
        title += " (the default group)"
    print(title)
    fields = [
        ("members", _members(config, group)),
        ("allow", ", ".join(group.allow) or "none"),
        ("deny", ", ".join(group.deny) or "none"),
        *((label, _text(value)) for _, label, value in _settings(group)),
        ("schedules", ", ".join(_used_schedules(config, group)) or "none"),
    ]
    width = max(len(label) for label, _ in fields) + 2
    for label, value in fields:
        _wrapped(f"{(label + ':').ljust(width)}{value}", indent=2, hang=width + 2)
    ordered = categories_in_order(config)
    used = _used_schedules(config, group)
    columns = {name: config.group_actions(group, frozenset({name})) for name in used}
    base = config.group_actions(group, frozenset())
    labels = _schedule_labels(used, ordered)
    header = ("TIER", "CATEGORY", "OUTSIDE", *labels, "NAME")
    rows = []
    last_tier = None
    for c in ordered:
        tier = c.tier.value if c.tier != last_tier else ""
        last_tier = c.tier
        rows.append(
            (
                tier,
                c.id,
                SHORT[base[c.id]],
                *(SHORT[columns[name][c.id]] for name in used),
                c.name(language),
            )
        )
    _table(header, rows, indent=2, flexible=len(header) - 1)
    if labels != list(used):
        key = ", ".join(f"{label} = {name}" for label, name in zip(labels, used, strict=True))
        _wrapped(key, indent=2, hang=4)


def _schedule_labels(used: Sequence[str], ordered: list[Category]) -> list[str]:
    """The schedules' names as column headers, or S1, S2... when the names would push the
    table past the terminal's width."""
    fixed = 2 + max(len(t.tier.value) for t in ordered) + 2 + max(len(c.id) for c in ordered)
    fixed += 2 + len("OUTSIDE") + sum(2 + max(len(n), 5) for n in used) + 2 + 12
    if fixed <= WIDTH:
        return list(used)
    return [f"S{i}" for i in range(1, len(used) + 1)]


def _members(config: AgentConfig, group: GroupConfig) -> str:
    rule = group.rule
    parts = []
    if rule.networks:
        parts.append("addresses " + ", ".join(str(n) for n in rule.networks))
    if rule.macs:
        parts.append("MACs " + ", ".join(sorted(rule.macs)))
    if rule.hostnames:
        parts.append("DHCP names " + ", ".join(rule.hostnames))
    if group.default:
        parts.append(
            "every client" if len(config.groups) == 1 else "every device no other group claims"
        )
    return "; ".join(parts) or "none"


def _used_schedules(config: AgentConfig, group: GroupConfig) -> list[str]:
    """The schedules that change this group's actions, in the file's order."""
    return [s.name for s in config.schedules if s.name in group.schedule_overrides]


def _action_values(
    config: AgentConfig, group: GroupConfig, ordered: list[Category], on: frozenset[str]
) -> dict[str, str]:
    actions = config.group_actions(group, on)
    return {c.id: actions[c.id].value for c in ordered}


def _schedule_data(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name,
        "days": [DAYS[d] for d in sorted(s.days)],
        "times": [_window(w) for w in s.windows],
        "dates": [_date_range(r) for r in s.dates],
        "except_dates": [_date_range(r) for r in s.except_dates],
    }


def _schedule_text(s: Schedule) -> str:
    parts = [_days(s.days) + (" " + ", ".join(_window(w) for w in s.windows) if s.windows else "")]
    if s.dates:
        parts.append("dates " + ", ".join(_date_range(r) for r in s.dates))
    if s.except_dates:
        parts.append("not " + ", ".join(_date_range(r) for r in s.except_dates))
    return "; ".join(parts)


def _days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "every day"
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(DAYS[r[0]] if len(r) == 1 else f"{DAYS[r[0]]}-{DAYS[r[-1]]}" for r in runs)


def _window(w: Window) -> str:
    return f"{w.start // 60:02d}:{w.start % 60:02d}-{w.end // 60:02d}:{w.end % 60:02d}"


def _date_range(r: DateRange) -> str:
    if r.first == r.last:
        return r.first.isoformat()
    return f"{r.first.isoformat()}..{r.last.isoformat()}"


# policy test


def test(
    config: AgentConfig,
    open_lists: OpenLists,
    *,
    groups: Sequence[str] = (),
    at: dt.datetime | None = None,
    fmt: str = "text",
    probes: Sequence[tuple[str, str]] = (),
    strict: bool = False,
) -> int:
    try:
        # Before the lists are opened, which may mean compiling them.
        check_choices(config, groups, probes)
    except PolicyTestError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    moment = at or config.local_now()
    exceptions = exceptions_at(config, moment, exact=at is not None)
    with tempfile.TemporaryDirectory(prefix="schoolgate-policy-test-") as scratch:
        lists, fresh = open_lists(config, Path(scratch))
        try:
            result = policy_test(
                config,
                lists,
                moment=moment,
                exceptions=exceptions,
                in_service=not fresh,
                groups=groups,
                probes=probes,
                strict=strict,
            )
        finally:
            lists.close()
    if fmt == "json":
        print(json.dumps(result.data(), indent=2, ensure_ascii=False))
    else:
        _print_test(config, result)
    return EXIT_OK if result.passed else EXIT_MISMATCH


def exceptions_at(config: AgentConfig, moment: dt.datetime, exact: bool) -> list[PolicyException]:
    """The exceptions in force at ``moment`` (``exact``) or now: granted before it and not yet
    expired. ``check`` and ``policy test`` both take them from here."""
    when = moment.replace(tzinfo=config.timezone).timestamp() if exact else time.time()
    try:
        return [e for e in ExceptionStore(config.state_dir).load(when) if e.created <= when]
    except ExceptionError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return []


def _print_test(config: AgentConfig, result: PolicyTest) -> None:
    context, summary, checks = result.context, result.summary, result.checks
    zone = context["timezone"] or "the machine's own time zone"
    on = ", ".join(context["schedules_on"]) or "none"
    build = context["lists"]
    where = "in service" if build["in_service"] else "compiled for this check"
    print(f"time:       {context['at']} ({zone}); schedules on: {on}")
    print(f"lists:      build {build['build']}, {build['names']} names ({where})")
    print(f"exceptions: {context['exceptions']} in force")
    print(LEGEND)
    strict = summary["strict"]
    for g in result.groups:
        print()
        mine = [n for n in _used_schedules(config, g) if n in context["schedules_on"]]
        changed = f"; as while {', '.join(mine)} is on" if mine else ""
        print(f"group {g.name}: age tier {g.age_tier.value}{changed}")
        rows = [
            (
                ">>" if c.result == "mismatch" or (strict and not c.probe) else "",
                c.category.id,
                "(site probe)" if c.hidden else c.probe or "-",
                SHORT[c.expected],
                SHORT[c.actual] if c.actual else "-",
                c.result.upper() if c.result == "mismatch" else c.result,
                c.note,
            )
            for c in checks
            if c.group == g.name
        ]
        header = ("", "CATEGORY", "PROBE", "EXPECTED", "ACTUAL", "RESULT", "NOTE")
        _table(header, rows, indent=0, flexible=len(header) - 1)
    print()
    without = summary["without_probe"]
    line = (
        f"{summary['checks']} checks, {summary['mismatches']} mismatches,"
        f" {summary['overrides']} decided by allow or deny entries or exceptions,"
        f" {len(without)} categories without a probe"
    )
    _wrapped(line + (f": {', '.join(without)}" if without else ""), indent=0, hang=4)
    if summary["strict"] and without:
        print("--strict: a category without a probe fails the check")
    print("passed" if summary["passed"] else "FAILED")


# layout


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _clip(text: str, width: int) -> str:
    if _width(text) <= width:
        return text
    out = ""
    for ch in text:
        if _width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, indent: int, flexible: int
) -> None:
    """Rows in columns; the ``flexible`` column is cut short to keep lines within WIDTH."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(_width(r[i]) for r in table) for i in range(len(header))]
    others = indent + sum(w + 2 for i, w in enumerate(widths) if i != flexible)
    widths[flexible] = max(min(widths[flexible], WIDTH - others), 12)
    for row in table:
        cells = [_clip(v, widths[i]) for i, v in enumerate(row)]
        line = "  ".join(v + " " * (widths[i] - _width(v)) for i, v in enumerate(cells))
        print((" " * indent + line).rstrip())


def _wrapped(text: str, *, indent: int, hang: int) -> None:
    for line in textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=" " * indent,
        subsequent_indent=" " * hang,
        break_on_hyphens=False,
    ):
        print(line)
