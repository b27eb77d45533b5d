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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.monitor.bandwidth import DeviceBytes, interface_events, top_talkers
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
        self.device_bytes: DeviceBytes | None = None
        self.interfaces: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters: tuple[float, dict[str, Any]] | None = None  # the last interface reading

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
        self.interfaces = interfaces
        log.info("network monitor watching %s", ", ".join(interfaces))
        if self.settings.device_bytes and self.settings.bandwidth_interval:
            counter = DeviceBytes(interfaces, self.networks)
            try:
                await asyncio.to_thread(counter.start)
                self.device_bytes = counter
            except Exception as exc:
                log.warning("network monitor: no bytes per device: %s", exc)
        self._counters = await asyncio.to_thread(self._read_counters)
        return True

    async def stop(self) -> None:
        watch, self.watch = self.watch, None
        if watch is not None:
            await asyncio.to_thread(watch.stop)
        counter, self.device_bytes = self.device_bytes, None
        if counter is not None:
            await asyncio.to_thread(counter.stop)
        await self.save()

    async def bandwidth(self) -> list[Event]:
        """The bandwidth events since the last call (interfaces, then top talkers), put in
        the activity buffer too."""
        if self.watch is None or self._counters is None:
            return []
        before_time, before = self._counters
        reading = await asyncio.to_thread(self._read_counters)
        self._counters = reading
        now = time.time()
        found = interface_events(before, reading[1], reading[0] - before_time, now)
        if self.device_bytes is not None and self.settings.top_talkers:
            found += top_talkers(self.device_bytes.take(), self.settings.top_talkers, now)
        for event in found:
            self.events.append(event)
        return found

    def _read_counters(self) -> tuple[float, dict[str, Any]]:
        import psutil  # noqa: PLC0415

        counters = psutil.net_io_counters(pernic=True)
        return time.monotonic(), {n: c for n, c in counters.items() if n in self.interfaces}

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
