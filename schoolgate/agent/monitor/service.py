"""The network monitor of a running agent: the device inventory and the watch that feeds it.

Started after the DNS listeners, stopped before them; a monitor that cannot capture (no
capability, no tcpdump, no LAN interface) logs one clear warning and the agent carries on
without it. Device events go to the activity buffer, alerts to its urgent queue, from the
capture thread through ``call_soon_threadsafe``: the buffer is only ever touched on the event
loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.monitor.capture import CaptureError, DeviceWatch, lan_interfaces
from schoolgate.agent.monitor.devices import DeviceInventory
from schoolgate.agent.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def inventory_path(state_dir: Path) -> Path:
    return state_dir / "monitor" / "devices.json"


def vendor_of(mac: str) -> str:
    """The maker of a network card from its MAC prefix, from the IEEE registry as Wireshark
    keeps it (the copy scapy ships); '' for an unknown or locally administered address."""
    from scapy.config import conf  # noqa: PLC0415 - loaded with the monitor only

    found = conf.manufdb.lookup(mac)
    short = str(found[0]) if found else ""
    return "" if short.lower() == mac.lower() else short


class NetworkMonitor:
    def __init__(
        self,
        settings: MonitorSettings,
        networks: Sequence[Network],
        state_dir: Path,
        events: EventBuffer[object],
    ) -> None:
        self.settings = settings
        self.networks = tuple(networks)
        self.events = events
        self.inventory = DeviceInventory(
            inventory_path(state_dir), settings.approved_macs, vendor_of
        )
        self.watch: DeviceWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self.watch is not None

    async def start(self) -> bool:
        """Start watching; False (after one warning) when it cannot."""
        if not self.settings.enabled:
            return False
        interfaces = list(self.settings.interfaces) or lan_interfaces(self.networks)
        if not interfaces:
            log.info(
                "network monitor: no interface has an address in the client networks; set"
                " monitor.interfaces to watch one"
            )
            return False
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.inventory.load)
        watch = DeviceWatch(interfaces, self.inventory, self._deliver)
        try:
            await asyncio.to_thread(watch.start)
        except CaptureError as exc:
            log.warning("network monitor is off: %s; DNS filtering carries on", exc)
            return False
        self.watch = watch
        log.info("network monitor watching %s", ", ".join(interfaces))
        return True

    async def stop(self) -> None:
        watch, self.watch = self.watch, None
        if watch is not None:
            await asyncio.to_thread(watch.stop)
        await self.save()

    async def save(self) -> None:
        await asyncio.to_thread(self.inventory.save)

    def _deliver(self, found: list[Event]) -> None:
        """From the capture thread: hand the events to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._append, found)
        except RuntimeError:  # the loop closed meanwhile: the agent is stopping
            pass

    def _append(self, found: list[Event]) -> None:
        for event in found:
            if event.kind is EventKind.ALERT:
                self.events.append_urgent(event)
            else:
                self.events.append(event)
