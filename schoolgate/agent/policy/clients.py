"""Who is asking: the client's address mapped to a device and its group, or refused.

The agent must never be an open resolver, so a source address outside the configured client
networks is refused before anything else is looked at. The device (MAC address, DHCP name)
comes from an in-memory map that background jobs replace whole; the group from the group
rules. Both are memoized per address, and the memo is emptied when the map changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.groups import GroupMatcher
from schoolgate.agent.policy.identity import Device
from schoolgate.agent.stats import GroupTally

_MEMO_LIMIT: Final = 65_536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Group:
    """A group of clients sharing one policy; it owns the memo of its decisions."""

    __slots__ = (
        "actions",
        "devices",
        "memo",
        "name",
        "name_memo",
        "overrides",
        "rewrites",
        "tally",
    )

    def __init__(
        self,
        name: str,
        actions: Mapping[str, Action] | None = None,
        rewrites: Mapping[bytes, Decision] | None = None,
        tally: GroupTally | None = None,
    ) -> None:
        self.name = name
        # The group's query counters, kept by the agent across reloads (the metrics).
        self.tally = tally if tally is not None else GroupTally()
        # SafeSearch: exact names answered with a CNAME to an engine's safe-mode host.
        self.rewrites: Mapping[bytes, Decision] = rewrites or {}
        # The action for each category; a category missing here is blocked.
        self.actions: Mapping[str, Action] = actions or {}
        # Decisions by query key and by bare name (CNAME targets), for this policy version.
        self.memo: dict[bytes, Decision] = {}
        self.name_memo: dict[bytes, Decision] = {}
        # Allow and deny entries (the group's lists and live exceptions), by the wire form of
        # the name they cover: a suffix of the question is looked up as it sits in the packet.
        self.overrides: dict[bytes, Decision] = {}
        # The devices given exceptions of their own, by MAC or IP address: each is served as
        # a copy of this group with its own overrides and memo, so that the query path stays
        # one dictionary lookup per question whoever asks.
        self.devices: dict[str, Group] = {}

    def set_overrides(self, overrides: dict[bytes, Decision]) -> None:
        if overrides == self.overrides:
            return
        self.overrides = overrides
        self.memo.clear()
        self.name_memo.clear()

    def set_devices(self, overrides: Mapping[str, dict[bytes, Decision]]) -> bool:
        """The devices with exceptions of their own and each one's overrides; True when the
        set of devices changed (the clients known by address must then be looked up again)."""
        changed = overrides.keys() != self.devices.keys()
        devices: dict[str, Group] = {}
        for device, entries in overrides.items():
            copy = self.devices.get(device)
            if copy is None:
                copy = Group(self.name, self.actions, self.rewrites, self.tally)
            copy.set_overrides(entries)  # keeps its memo when nothing changed for it
            devices[device] = copy
        self.devices = devices
        return changed

    def for_device(self, mac: str, address: str) -> Group:
        """The group as this device is served: its own copy when it has exceptions."""
        devices = self.devices
        if not devices:
            return self
        return devices.get(mac) or devices.get(address) or self

    def set_actions(self, actions: Mapping[str, Action]) -> None:
        """New actions (a schedule started or ended): the decisions made so far are void."""
        if actions == self.actions:
            return
        self.actions = actions
        # Emptied in place: the query path reaches these dicts through the group.
        self.memo.clear()
        self.name_memo.clear()
        for copy in self.devices.values():
            copy.set_actions(actions)

    def __repr__(self) -> str:
        return f"Group({self.name!r})"


class Client:
    """A client as the pipeline knows it."""

    __slots__ = ("address", "group", "hostname", "mac")

    def __init__(self, address: str, group: Group, device: Device | None = None) -> None:
        self.address = address
        self.group = group
        self.mac = device.mac if device is not None else ""
        self.hostname = device.hostname if device is not None else ""


class ClientIdentifier:
    """Maps a source address to a ``Client`` (memoized), or None when it must be refused."""

    def __init__(
        self,
        networks: Iterable[Network],
        default_group: Group,
        groups: Mapping[str, Group] | None = None,
        matcher: GroupMatcher | None = None,
        devices: Mapping[str, Device] | None = None,
    ) -> None:
        self._v4 = tuple(n for n in networks if n.version == 4)
        self._v6 = tuple(n for n in networks if n.version == 6)
        self._default = default_group
        self.groups: dict[str, Group] = dict(groups or {default_group.name: default_group})
        self._matcher = matcher
        self.devices: Mapping[str, Device] = devices or {}
        # Address -> client, or None for an address to refuse; read directly by the query path.
        self.memo: dict[str, Client | None] = {}

    def forget_clients(self) -> None:
        """Look every client up again (a device gained or lost exceptions of its own)."""
        self.memo.clear()  # the same dict: the query path holds a reference to it

    def use_devices(self, devices: Mapping[str, Device]) -> bool:
        """Take a fresh device map; True when it changed (and the memo was emptied)."""
        if devices == self.devices:
            return False
        self.devices = devices
        self.memo.clear()  # the same dict: the query path holds a reference to it
        return True

    def identify(self, address: str) -> Client | None:
        try:
            return self.memo[address]
        except KeyError:
            pass
        client = self._lookup(address)
        memo = self.memo
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()  # a scan from many addresses must not grow memory without bound
        memo[address] = client
        return client

    def _lookup(self, address: str) -> Client | None:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        networks: tuple[Network, ...] = self._v4 if ip.version == 4 else self._v6
        if not any(ip in net for net in networks):
            return None
        text = str(ip)
        device = self.devices.get(text)
        group = self._default
        if self._matcher is not None:
            group = self.groups.get(self._matcher.match(ip, device), self._default)
        group = group.for_device(device.mac if device is not None else "", text)
        return Client(text, group, device)
