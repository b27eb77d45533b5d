"""Events as CSV lines for a spreadsheet, with nothing a spreadsheet would run.

Every name, hostname and rule in an export came from the network: a pupil can look up
``=cmd.example`` or name a laptop ``@SUM(...)``. A cell that starts with a character a
spreadsheet reads as the start of a formula gets a leading apostrophe, which spreadsheets
show as text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

COLUMNS: Final = (
    "site",
    "time",
    "seq",
    "kind",
    "client_ip",
    "mac",
    "hostname",
    "group",
    "name",
    "qtype",
    "action",
    "category",
    "categories",
    "rule",
    "rcode",
    "latency_ms",
    "cache_hit",
    "severity",
    "data",
)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def header() -> str:
    return ",".join(COLUMNS) + "\r\n"


def lines(rows: Iterable[Mapping[str, Any]], site_names: Mapping[int, str]) -> str:
    """The CSV of events (rows of ``EventQueries.events``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        record = {
            **row,
            "site": site_names.get(row["site_id"], str(row["site_id"])),
            "time": iso(row["time"]),
            "group": row["grp"],
            "categories": " ".join(c for c in row["categories"].split(",") if c),
        }
        writer.writerow([cell(record[c]) for c in COLUMNS])
    return out.getvalue()
