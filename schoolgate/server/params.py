"""The query string of an admin API request, read strictly.

Each endpoint names the parameters it takes; any other is refused, so that a mistyped filter
("categroy=") is a 400 rather than a search that silently matches everything. Every problem
is a 400 naming the parameter.

Times are ISO 8601 (``2026-11-20``, ``2026-11-20T08:30:00Z``; without a zone, UTC) or seconds
since the epoch. A ``+`` in a query string means a space: send an offset such as ``+01:00``
as ``%2B01:00`` (``curl -G --data-urlencode`` does).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from starlette.requests import Request

from schoolgate.agent.policy.identity import normalize_mac
from schoolgate.server.errors import bad_parameter
from schoolgate.server.queries import Key, decode_cursor

MAX_TEXT = 255


def parse_time(text: str, zone: tzinfo = UTC) -> float:
    """Seconds since the epoch from ISO 8601 (without an offset, in ``zone``) or a number;
    ``ValueError`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        value = moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ValueError("out of range")
    return value


class Params:
    def __init__(self, request: Request, allowed: Collection[str], zone: tzinfo = UTC) -> None:
        """``zone``: where a time without an offset is (the admin pages' form fields say
        the school's local time; the API's callers, UTC)."""
        self.query = request.query_params
        self.zone = zone
        for name in self.query:
            if name not in allowed:
                takes = ", ".join(sorted(allowed)) or "none"
                raise bad_parameter(name, f"not a parameter of this endpoint (it takes {takes})")

    def given(self) -> dict[str, Any]:
        """The parameters as sent (a repeated one as a list), for the audit log."""
        found: dict[str, Any] = {}
        for name in self.query:
            values = self.query.getlist(name)
            found[name] = values if len(values) > 1 else values[0]
        return found

    def texts(self, name: str, most: int = MAX_TEXT) -> list[str]:
        values = self.query.getlist(name)
        for value in values:
            if len(value) > most:
                raise bad_parameter(name, f"at most {most} characters")
            if not value.isprintable():
                raise bad_parameter(name, "control characters are not allowed")
        return [v for v in values if v]

    def text(self, name: str, most: int = MAX_TEXT) -> str:
        values = self.texts(name, most)
        if len(values) > 1:
            raise bad_parameter(name, "give it once")
        return values[0] if values else ""

    def choice(self, name: str, choices: Sequence[str]) -> str:
        value = self.text(name)
        if value and value not in choices:
            raise bad_parameter(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def time(self, name: str) -> float | None:
        value = self.text(name, 64)
        if not value:
            return None
        try:
            return parse_time(value, self.zone)
        except ValueError:
            raise bad_parameter(
                name, f"{value!r} is not a time: use ISO 8601 or seconds since the epoch"
            ) from None

    def span(self, default: float, now: float) -> tuple[float, float | None]:
        """``since`` and ``until`` (by default open); without ``since``, the ``default``
        seconds before ``until``, or before ``now``."""
        since = self.time("since")
        until = self.time("until")
        if since is None:
            since = (now if until is None else until) - default
        if until is not None and until <= since:
            raise bad_parameter("until", "must be after since")
        return since, until

    def integer(self, name: str, default: int, lowest: int, highest: int) -> int:
        value = self.text(name, 16)
        if not value:
            return default
        if not value.isdigit() or not lowest <= int(value) <= highest:
            raise bad_parameter(name, f"a whole number from {lowest} to {highest}")
        return int(value)

    def cursor(self, shape: Sequence[type]) -> Key | None:
        value = self.text("cursor", 1024)
        if not value:
            return None
        try:
            return decode_cursor(value, shape)
        except ValueError as exc:
            raise bad_parameter("cursor", str(exc)) from None

    def client(self) -> str:
        """An address as the agent writes it; a pseudonym is taken as it is."""
        value = self.text("client", 64)
        try:
            return str(ipaddress.ip_address(value)) if value else ""
        except ValueError:
            return value

    def mac(self) -> str:
        """A MAC in any usual spelling, as aa:bb:cc:dd:ee:ff; a pseudonym as it is."""
        value = self.text("mac", 64)
        return (normalize_mac(value) or value) if value else ""
