"""The device inventory: every MAC address seen on the LAN, what it called itself and when.

Fed by the capture thread with what ARP and DHCP show (``observe``); read by the metrics and
saved to ``STATE_DIR/monitor/devices.json`` now and then, so a restart neither forgets the
school's devices nor announces them all again. A device seen for the first time gives a
``device`` event; one the school has not approved also gives an alert, once.

Approved devices are the MACs of ``monitor.approved_macs`` and of every group's ``macs``. A
school that lists none has not said which devices it approves, so no device alerts are raised
then (the device events still are).

The inventory is bounded (``MAX_DEVICES``): past it, the devices not seen for longest are
forgotten, so a flood of made-up MAC addresses cannot grow memory or the file without limit.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from schoolgate.agent.activity.events import Event, EventKind, Severity
from schoolgate.agent.files import write_atomic

log = logging.getLogger(__name__)

MAX_DEVICES: Final = 20_000
MAX_ADDRESSES: Final = 8  # per device: the most recent ones
REASON_UNAPPROVED: Final = "unapproved-device"


@dataclass
class Device:
    mac: str
    vendor: str = ""
    addresses: list[str] = field(default_factory=list)  # the most recent last
    hostname: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    alerted: bool = False  # an unapproved-device alert was raised for it


Vendor = Callable[[str], str]


class DeviceInventory:
    def __init__(self, path: Path, approved: Iterable[str], vendor: Vendor) -> None:
        self.path = path
        self.approved = frozenset(approved)
        self.vendor = vendor
        self.devices: dict[str, Device] = {}
        self._lock = threading.Lock()  # the capture thread observes, the loop saves and reads
        self.changed = False

    def load(self) -> None:
        """Read the saved inventory; a missing or broken file starts an empty one."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            found = {d["mac"]: Device(**d) for d in raw["devices"]}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "device inventory %s cannot be read (%s); starting a new one", self.path, exc
            )
            return
        with self._lock:
            self.devices = found

    def save(self) -> None:
        """Write the inventory if it changed (atomically; in a thread, it touches the disk)."""
        with self._lock:
            if not self.changed:
                return
            data = {"devices": [asdict(d) for d in self.devices.values()]}
            self.changed = False
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, indent=0).encode())
        except OSError as exc:
            with self._lock:
                self.changed = True
            log.warning("cannot save the device inventory %s: %s", self.path, exc.strerror)

    def observe(self, mac: str, now: float, address: str = "", hostname: str = "") -> list[Event]:
        """What one packet showed of a device; the events it gives (a new device, an alert)."""
        with self._lock:
            device = self.devices.get(mac)
            events: list[Event] = []
            if device is None:
                if len(self.devices) >= MAX_DEVICES:
                    self._forget_oldest()
                device = self.devices[mac] = Device(mac, self.vendor(mac), first_seen=now)
                events.append(self._event(device, now, address, hostname, "new"))
            device.last_seen = now
            if address and (not device.addresses or device.addresses[-1] != address):
                if address in device.addresses:
                    device.addresses.remove(address)
                device.addresses.append(address)
                del device.addresses[:-MAX_ADDRESSES]
            if hostname:
                device.hostname = hostname
            if self.approved and mac not in self.approved and not device.alerted:
                device.alerted = True
                events.append(self._alert(device, now, address))
            self.changed = True
            return events

    def counts(self) -> tuple[int, int]:
        """(devices known, devices unapproved); none are unapproved without an approved list."""
        with self._lock:
            known = len(self.devices)
            if not self.approved:
                return known, 0
            return known, sum(1 for mac in self.devices if mac not in self.approved)

    def _forget_oldest(self) -> None:
        by_age = sorted(self.devices.values(), key=lambda d: d.last_seen)
        for device in by_age[: max(len(by_age) // 10, 1)]:
            del self.devices[device.mac]

    def _event(self, device: Device, now: float, address: str, hostname: str, what: str) -> Event:
        data: dict[str, Any] = {"seen": what, "vendor": device.vendor}
        if self.approved:
            data["approved"] = device.mac in self.approved
        return Event(
            kind=EventKind.DEVICE,
            time=now,
            client_ip=address,
            mac=device.mac,
            hostname=hostname or device.hostname,
            data=data,
        )

    def _alert(self, device: Device, now: float, address: str) -> Event:
        return Event(
            kind=EventKind.ALERT,
            time=now,
            client_ip=address or (device.addresses[-1] if device.addresses else ""),
            mac=device.mac,
            hostname=device.hostname,
            severity=Severity.MEDIUM,
            data={"reason": REASON_UNAPPROVED, "vendor": device.vendor},
        )
