"""Bandwidth: bytes through each interface (psutil), and per device when this box routes the
school's traffic (a capture of IP headers, added up in memory).

Every ``monitor.bandwidth_interval`` seconds the monitor turns what was counted into
``bandwidth`` events: one per interface (bytes and packets each way since the last one) and
one per top talker (the ``monitor.top_talkers`` LAN addresses that moved the most bytes).

The per-device count reads every IP packet on the LAN interfaces, so it does no more per
packet than it must: the kernel filter passes only IP, the thread reads the first 128 bytes of
each (enough for the headers; the length is taken from the IP header) and parses them with
``struct``, never with scapy's dissectors. The table of addresses is bounded.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import struct
import threading
from collections.abc import Sequence
from typing import Any, Final

from schoolgate.agent.activity.events import Event, EventKind

log = logging.getLogger(__name__)

IP_FILTER: Final = "ip or ip6"
_MAX_ADDRESSES: Final = 65_536
_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_ETH_VLAN: Final = (0x8100, 0x88A8)
_U16: Final = struct.Struct("!H")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def interface_events(
    before: dict[str, Any], after: dict[str, Any], seconds: float, now: float
) -> list[Event]:
    """One event per interface from two ``psutil.net_io_counters(pernic=True)`` readings. A
    counter that went down (the interface came back) counts from zero."""
    found = []
    for name, now_counts in sorted(after.items()):
        old = before.get(name)
        if old is None:
            continue

        def delta(field: str, now_counts: Any = now_counts, old: Any = old) -> int:
            new, previous = getattr(now_counts, field), getattr(old, field)
            return int(new - previous if new >= previous else new)

        found.append(
            Event(
                kind=EventKind.BANDWIDTH,
                time=now,
                name=name,
                data={
                    "interface": name,
                    "seconds": round(seconds, 3),
                    "bytes_in": delta("bytes_recv"),
                    "bytes_out": delta("bytes_sent"),
                    "packets_in": delta("packets_recv"),
                    "packets_out": delta("packets_sent"),
                },
            )
        )
    return found


def frame_addresses(frame: bytes) -> tuple[bytes, bytes, int] | None:
    """(source, destination, IP length) of an Ethernet frame carrying IPv4 or IPv6, from the
    raw bytes; None for anything else or anything too short."""
    at = 12
    if len(frame) < at + 2:
        return None
    kind = _U16.unpack_from(frame, at)[0]
    while kind in _ETH_VLAN and len(frame) >= at + 6:
        at += 4
        kind = _U16.unpack_from(frame, at)[0]
    at += 2
    if kind == _ETH_IPV4 and len(frame) >= at + 20:
        return (
            frame[at + 12 : at + 16],
            frame[at + 16 : at + 20],
            _U16.unpack_from(frame, at + 2)[0],
        )
    if kind == _ETH_IPV6 and len(frame) >= at + 40:
        payload = _U16.unpack_from(frame, at + 4)[0]
        return frame[at + 8 : at + 24], frame[at + 24 : at + 40], payload + 40
    return None


class DeviceBytes:
    """Bytes each LAN address sent and received, counted in a capture thread."""

    def __init__(self, interfaces: Sequence[str], networks: Sequence[Network]) -> None:
        self.interfaces = tuple(interfaces)
        self.networks = tuple(networks)
        self.packets = 0
        self._lock = threading.Lock()
        self._counts: dict[bytes, list[int]] = {}  # packed address -> [in, out]
        self._lan: dict[bytes, bool] = {}
        self._sockets: list[Any] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Open the captures now (raises what ``L2ListenSocket`` raises), read in a thread."""
        from scapy.arch.linux import L2ListenSocket  # noqa: PLC0415 - loaded with the monitor

        sockets = []
        try:
            for name in self.interfaces:
                sockets.append(L2ListenSocket(iface=name, filter=IP_FILTER))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._sockets = sockets
        self._thread = threading.Thread(target=self._run, name="device-bytes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        self._sockets = []

    def take(self) -> dict[str, tuple[int, int]]:
        """What was counted since the last call, by address: (bytes in, bytes out)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return {str(ipaddress.ip_address(packed)): (c[0], c[1]) for packed, c in counts.items()}

    def _run(self) -> None:
        raw = [sock.ins for sock in self._sockets]
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(raw, [], [], 0.5)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    frame = fd.recv(128)
                except OSError:
                    continue
                self._count(frame)

    def _count(self, frame: bytes) -> None:
        found = frame_addresses(frame)
        if found is None:
            return
        source, destination, length = found
        self.packets += 1
        with self._lock:
            if self._is_lan(source):
                self._add(source, 1, length)
            if self._is_lan(destination):
                self._add(destination, 0, length)

    def _add(self, address: bytes, direction: int, length: int) -> None:
        counts = self._counts.get(address)
        if counts is None:
            if len(self._counts) >= _MAX_ADDRESSES:
                return  # a flood of made-up addresses: the rest wait for the next interval
            counts = self._counts[address] = [0, 0]
        counts[direction] += length

    def _is_lan(self, packed: bytes) -> bool:
        known = self._lan.get(packed)
        if known is None:
            address = ipaddress.ip_address(packed)
            known = any(address.version == n.version and address in n for n in self.networks)
            if len(self._lan) >= _MAX_ADDRESSES:
                self._lan.clear()
            self._lan[packed] = known
        return known


def top_talkers(counts: dict[str, tuple[int, int]], most: int, now: float) -> list[Event]:
    ranked = sorted(counts.items(), key=lambda item: item[1][0] + item[1][1], reverse=True)
    return [
        Event(
            kind=EventKind.BANDWIDTH,
            time=now,
            client_ip=address,
            data={"top": rank, "bytes_in": received, "bytes_out": sent},
        )
        for rank, (address, (received, sent)) in enumerate(ranked[:most], start=1)
    ]
