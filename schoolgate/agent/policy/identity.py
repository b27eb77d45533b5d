"""What the network knows about a device: its MAC address and DHCP name, by IP address.

Two sources, read in the background and never on the query path:

* the neighbour table (``/proc/net/arp`` for IPv4, ``ip -6 neigh`` for IPv6): the MAC address of
  every device the box has talked to on the local network;
* DHCP lease files, whatever server wrote them: dnsmasq, ISC dhcpd (``dhcpd.leases``) and Kea
  (its CSV lease file). The format is recognised from the content.

The result is a plain ``{ip: Device}`` dictionary that the client identifier swaps in whole.
A file that cannot be read or parsed costs its entries and a warning, never the others.
"""

from __future__ import annotations

import calendar
import csv
import ipaddress
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

ARP_TABLE: Final = Path("/proc/net/arp")
_MAC: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ARP_COMPLETE: Final = 0x2
_NEIGH_UNUSABLE: Final = frozenset({"FAILED", "INCOMPLETE", "NOARP"})


@dataclass(frozen=True)
class Device:
    mac: str = ""  # lowercase, colon-separated; "" when unknown
    hostname: str = ""  # lowercase, as the device asked DHCP for it; "" when unknown


def normalize_mac(text: str) -> str | None:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff' or 'aa:bb:..' -> 'aa:bb:cc:dd:ee:ff'; None if not."""
    digits = re.sub(r"[^0-9a-fA-F]", "", text)
    if len(digits) != 12 or len(re.sub(r"[0-9a-fA-F:.\-]", "", text)) != 0:
        return None
    mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()
    return mac if _MAC.match(mac) else None


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# --- the neighbour table ------------------------------------------------------------------------


def parse_arp(text: str) -> dict[str, str]:
    """``/proc/net/arp`` -> {ip: mac}, complete entries only."""
    found: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        ip, flags, mac = _address(parts[0]), parts[2], normalize_mac(parts[3])
        try:
            complete = int(flags, 16) & _ARP_COMPLETE
        except ValueError:
            continue
        if ip and mac and complete and mac != "00:00:00:00:00:00":
            found[ip] = mac
    return found


def parse_ip_neigh(text: str) -> dict[str, str]:
    """Output of ``ip neigh show`` -> {ip: mac}, reachable or recently reachable entries."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[-1] in _NEIGH_UNUSABLE or "lladdr" not in parts:
            continue
        ip = _address(parts[0].split("%", 1)[0])
        after = parts.index("lladdr") + 1
        mac = normalize_mac(parts[after]) if after < len(parts) else None
        if ip and mac:
            found[ip] = mac
    return found


def read_neighbours(arp_table: Path = ARP_TABLE) -> dict[str, str]:
    """The box's neighbour table, IPv4 and IPv6; empty parts when a source is missing."""
    found: dict[str, str] = {}
    try:
        found.update(parse_arp(arp_table.read_text(encoding="ascii", errors="replace")))
    except OSError:
        pass
    ip = shutil.which("ip")
    if ip is not None:
        try:
            out = subprocess.run(  # noqa: S603 - a fixed command, found on PATH
                [ip, "-6", "neigh", "show"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.returncode != 0:
                _neighbours_failed(f"exit {out.returncode}: {out.stderr.strip()[:200]}")
            found.update(parse_ip_neigh(out.stdout))
        except (OSError, subprocess.TimeoutExpired) as exc:
            _neighbours_failed(str(exc))
    return found


_warned: set[str] = set()


def _neighbours_failed(why: str) -> None:
    """Said once a process: the table is read every minute or so, and a sandbox that refuses
    it refuses it every time. IPv6 devices then go without their MAC address."""
    if not _warned:
        _warned.add(why)
        log.warning("cannot read the IPv6 neighbour table with 'ip -6 neigh' (%s)", why)


# --- DHCP lease files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    ip: str
    mac: str
    hostname: str
    expires: float  # seconds since the epoch; 0 for never


def parse_leases(text: str, now: float | None = None) -> list[Lease]:
    """Leases still current in a dnsmasq, ISC dhcpd or Kea CSV lease file."""
    now = time.time() if now is None else now
    head = text.lstrip()[:200]
    if head.startswith("address,"):
        leases = _kea(text)
    elif re.search(r"^\s*lease\s+\S+\s*\{", text, re.M):
        leases = _isc(text)
    else:
        leases = _dnsmasq(text)
    return [lease for lease in leases if not lease.expires or lease.expires > now]


def _name(text: str) -> str:
    # The device's own name, without a domain: Kea keeps the fully qualified name it put in
    # the DNS ("ks2-lab-01.school.example."), dnsmasq and dhcpd the name the client sent.
    name = text.strip().strip('"').lower().split(".", 1)[0]
    return "" if name in ("", "*") else name


def _dnsmasq(text: str) -> Iterator[Lease]:
    # "EXPIRY MAC IP NAME CLIENT-ID"; after a "duid" line come IPv6 leases, "EXPIRY IAID IP NAME".
    ipv6 = False
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "duid":
            ipv6 = True
            continue
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        ip = _address(parts[2])
        if ip is None:
            continue
        mac = "" if ipv6 else (normalize_mac(parts[1]) or "")
        yield Lease(ip, mac, _name(parts[3]), float(parts[0]))


_ISC_BLOCK: Final = re.compile(r"^\s*lease\s+(\S+)\s*\{(.*?)^\s*\}", re.M | re.S)


def _isc(text: str) -> Iterator[Lease]:
    # dhcpd appends a new block for every change of a lease: the last block for an address wins.
    latest: dict[str, Lease | None] = {}
    for match in _ISC_BLOCK.finditer(text):
        ip = _address(match.group(1))
        if ip is None:
            continue
        body = match.group(2)
        state = re.search(r"^\s*binding state\s+(\w+)\s*;", body, re.M)
        if state is not None and state.group(1) != "active":
            latest[ip] = None
            continue
        mac = re.search(r"hardware ethernet\s+([0-9a-fA-F:]+)\s*;", body)
        name = re.search(r'client-hostname\s+"([^"]*)"\s*;', body)
        expires = _isc_ends(body)
        if expires is None:
            latest[ip] = None  # no end we can read: not counted as a device on the network
            continue
        latest[ip] = Lease(
            ip,
            (normalize_mac(mac.group(1)) or "") if mac else "",
            _name(name.group(1)) if name else "",
            expires,
        )
    return (lease for lease in latest.values() if lease is not None)


_ISC_ENDS: Final = re.compile(r"^\s*ends\s+([^;]*);", re.M)
_ISC_DATE: Final = re.compile(r"(?:\d\s+)?(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2})")


def _isc_ends(body: str) -> float | None:
    """When a dhcpd lease ends: seconds since the epoch, 0 for no end, None when unreadable.

    dhcpd writes ``ends 4 2026/11/21 10:00:00;`` (UTC, after the weekday), or with
    ``db-time-format local`` ``ends epoch 1795255200; # Sat Nov 21 10:00:00 2026``, or
    ``ends never;`` for an infinite lease. A block with no ``ends`` at all states no end.
    """
    found = _ISC_ENDS.search(body)
    if found is None:
        return 0.0
    value = found.group(1).strip()
    if value == "never":
        return 0.0
    if value.startswith("epoch"):
        seconds = value[len("epoch") :].strip()
        return float(seconds) if seconds.isdigit() else None
    date = _ISC_DATE.fullmatch(value)
    if date is None:
        return None
    try:
        return float(calendar.timegm(time.strptime(date.group(1), "%Y/%m/%d %H:%M:%S")))
    except ValueError:
        return None


def _kea(text: str) -> Iterator[Lease]:
    # Kea appends too; "state" 0 is an assigned lease, anything else is not in use.
    latest: dict[str, Lease | None] = {}
    for row in csv.DictReader(text.splitlines()):
        ip = _address((row.get("address") or "").strip())
        if ip is None:
            continue
        if (row.get("state") or "0").strip() != "0":
            latest[ip] = None
            continue
        expire = (row.get("expire") or "0").strip()
        latest[ip] = Lease(
            ip,
            normalize_mac(row.get("hwaddr") or "") or "",
            _name(row.get("hostname") or ""),
            float(expire) if expire.isdigit() else 0.0,
        )
    return (lease for lease in latest.values() if lease is not None)


def read_lease_files(paths: Iterable[Path]) -> list[Lease]:
    leases: list[Lease] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("cannot read DHCP lease file %s: %s", path, exc.strerror or exc)
            continue
        leases.extend(parse_leases(text))
    return leases


def device_map(neighbours: dict[str, str], leases: Iterable[Lease]) -> dict[str, Device]:
    """{ip: Device}: MACs from the neighbour table (what is on the wire now) win over leases."""
    devices: dict[str, Device] = {}
    for lease in leases:
        devices[lease.ip] = Device(lease.mac, lease.hostname)
    for ip, mac in neighbours.items():
        known = devices.get(ip)
        hostname = known.hostname if known is not None and known.mac in ("", mac) else ""
        devices[ip] = Device(mac, hostname)
    return devices


def read_devices(neighbours: bool, lease_files: Iterable[Path]) -> dict[str, Device]:
    """Everything known about the devices on the network now (blocking: run it in a thread)."""
    table = read_neighbours() if neighbours else {}
    return device_map(table, read_lease_files(lease_files))
