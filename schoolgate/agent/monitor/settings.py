"""The ``[monitor]`` settings, as the agent uses them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    interfaces: tuple[str, ...] = ()  # empty: every interface with an address in a client network
    approved_macs: frozenset[str] = frozenset()  # with every group's macs
