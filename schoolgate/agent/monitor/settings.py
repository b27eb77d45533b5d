"""The ``[monitor]`` settings, as the agent uses them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    interfaces: tuple[str, ...] = ()  # empty: every interface with an address in a client network
    approved_macs: frozenset[str] = frozenset()  # with every group's macs
    bandwidth_interval: int = 60  # seconds; 0: no bandwidth events
    top_talkers: int = 10
    device_bytes: bool = True  # count bytes per LAN address (when this box routes them)
