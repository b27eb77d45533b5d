"""Time-limited exceptions: a name allowed (or blocked) for one group until a moment.

Granted with ``schoolgate-agent allow NAME --group G --for 2h --reason TEXT`` (and from the
collector, for approved unblock requests), kept in ``STATE_DIR/policy/exceptions.json``,
written atomically under a lock so the command line and the agent never interleave. An
exception expires by itself; the agent reads the file again within a second of a change. Like a
group's allow and deny lists it overrides categories, never the locked tier.

An exception may be narrowed to one device of the group, named by its MAC address (which
follows the device from address to address) or, when the network never showed its MAC, by its
IP address. It still applies only while the device is in that group: moving a device to another
group is a decision about it that an older exception must not outlive.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from schoolgate.agent.dns.wire import text_to_wire
from schoolgate.agent.files import write_atomic
from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.identity import normalize_mac

_DURATION: Final = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION: Final = 366 * 86400


class ExceptionError(Exception):
    """An exception that cannot be granted, or a store that cannot be read."""


@dataclass(frozen=True)
class PolicyException:
    id: str
    name: str  # normalized: lowercase, punycode, no trailing dot
    group: str
    action: str  # "allow" or "block"
    expires: float  # seconds since the epoch
    reason: str
    created: float
    by: str  # who granted it: a user name, or "collector"
    device: str = ""  # "" for the whole group, else a MAC address or an IP address

    def live(self, now: float) -> bool:
        return self.expires > now


def whom(group: str, device: str) -> str:
    """Who an exception is for, in words for the command line."""
    return f"device {device} in group {group}" if device else f"group {group}"


def normalize_device(text: str) -> str:
    """A device as an exception names it: ``aa:bb:cc:dd:ee:ff`` for a MAC address in any
    common spelling, the canonical text of an IP address, or "" for none. Raises ValueError."""
    text = text.strip()
    if not text:
        return ""
    mac = normalize_mac(text)
    if mac is not None:
        return mac
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text[:80]!r} is neither a MAC address nor an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the client identifier knows such a client by its IPv4 address
    return str(ip)


def parse_duration(text: str) -> int:
    """'90m', '2h', '1d', '1w' -> seconds. Raises ValueError."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise ValueError("expected a number and a unit: 30m, 2h, 1d or 1w")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError("between one second and a year")
    return seconds


class ExceptionStore:
    """A file of exceptions: the local ``exceptions.json``, or the collector's copy."""

    def __init__(self, state_dir: Path, file_name: str = "exceptions.json") -> None:
        self.path = state_dir / "policy" / file_name

    def stamp(self) -> tuple[int, int] | None:
        """Changes when the file does: (inode, modification time), None when there is none."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def load(self, now: float | None = None) -> list[PolicyException]:
        """The exceptions not expired at ``now`` (default: this moment).

        An unreadable file is an ``ExceptionError``. An entry that is not a proper exception (a
        hand edit gone wrong) is skipped and the others stand: one bad line must not stop the
        agent from starting.
        """
        now = time.time() if now is None else now
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise ExceptionError(f"{self.path}: cannot read the exceptions: {err}") from None
        found: list[PolicyException] = []
        for item in raw.get("exceptions", []) if isinstance(raw, dict) else []:
            entry = parse_entry(item)
            if entry is not None and entry.live(now):
                found.append(entry)
        return found

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.stem}.lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def add(
        self,
        name: str,
        group: str,
        action: str,
        seconds: int,
        reason: str,
        by: str,
        device: str = "",
    ) -> PolicyException:
        now = time.time()
        entry = PolicyException(
            id=secrets.token_hex(4),
            name=name,
            group=group,
            action=action,
            expires=now + seconds,
            reason=reason,
            created=now,
            by=by,
            device=normalize_device(device),
        )
        with self._locked():
            kept = self.load(now)
            self._save([*kept, entry])
        return entry

    def remove(self, exception_id: str) -> bool:
        with self._locked():
            kept = self.load()
            left = [e for e in kept if e.id != exception_id]
            if len(left) == len(kept):
                return False
            self._save(left)
        return True

    def replace(self, entries: list[PolicyException]) -> None:
        """Make the file hold exactly ``entries`` (the collector's copy is replaced whole)."""
        with self._locked():
            self._save(entries)

    def _save(self, entries: list[PolicyException]) -> None:
        body = json.dumps({"exceptions": [asdict(e) for e in entries]}, indent=1)
        write_atomic(self.path, body.encode("utf-8"))


_TEXT_FIELDS: Final = ("id", "name", "group", "action", "reason", "by")


# Seconds since the epoch up to the year 9999: what time.gmtime and the log can show.
_LAST_MOMENT: Final = 253_402_300_799


def _moment(value: object) -> bool:
    """A number of seconds since the epoch that can be shown as a date (JSON also allows
    Infinity, NaN and 1e300)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and 0 <= value <= _LAST_MOMENT


def parse_entry(item: object) -> PolicyException | None:
    """An entry of a file (or of the collector's answer) as a ``PolicyException``, or None
    when it is not a sound one."""
    if not isinstance(item, dict):
        return None
    try:
        fields = {k: item[k] for k in (*_TEXT_FIELDS, "expires", "created")}
    except KeyError:
        return None
    if not all(isinstance(fields[k], str) for k in _TEXT_FIELDS):
        return None
    times = (fields["expires"], fields["created"])
    if not all(_moment(t) for t in times):
        return None
    if fields["action"] not in ("allow", "block"):
        return None
    device = item.get("device", "")  # absent in files written before devices could be named
    if not isinstance(device, str):
        return None
    try:
        fields["name"] = normalize(fields["name"])
        fields["device"] = normalize_device(device)
    except (InvalidName, ValueError):
        return None
    return PolicyException(**fields)


def group_overrides(
    group: str,
    allow: Iterable[str],
    deny: Iterable[str],
    exceptions: Iterable[PolicyException],
) -> dict[bytes, Decision]:
    """A group's allow and deny entries by the wire form of their name, with the exceptions
    granted to the whole group.

    For one name, a later kind wins: the allow list, then the deny list, then the exceptions
    in the order they were granted (an exception is the most recent decision about a name, and
    the newest of two is the one the school meant last).
    """
    found: dict[bytes, Decision] = {}
    for name in allow:
        found[text_to_wire(name)] = Decision(Action.ALLOW, "allow list", entry=name)
    for name in deny:
        found[text_to_wire(name)] = Decision(Action.BLOCK, "deny list", entry=name)
    _add_exceptions(found, [e for e in exceptions if e.group == group and not e.device])
    return found


def device_overrides(
    group: str, shared: dict[bytes, Decision], exceptions: Iterable[PolicyException]
) -> dict[str, dict[bytes, Decision]]:
    """For each device given exceptions of its own in ``group``: the group's entries
    (``shared``, from ``group_overrides``) with the device's on top, by the device's MAC or IP
    address. The newest exception about a name wins, whether granted to the group or the
    device."""
    mine = [e for e in exceptions if e.group == group]
    found: dict[str, dict[bytes, Decision]] = {}
    for device in dict.fromkeys(e.device for e in mine if e.device):
        entries = dict(shared)
        # The group's exceptions again, in order among the device's, so the newest wins.
        _add_exceptions(entries, [e for e in mine if e.device in ("", device)])
        found[device] = entries
    return found


def _add_exceptions(found: dict[bytes, Decision], exceptions: list[PolicyException]) -> None:
    for e in sorted(exceptions, key=lambda e: e.created):
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e.expires))
        rule = f"exception {e.id} until {until}" + (f": {e.reason}" if e.reason else "")
        action = Action.ALLOW if e.action == "allow" else Action.BLOCK
        found[text_to_wire(e.name)] = Decision(action, rule, entry=e.name)
