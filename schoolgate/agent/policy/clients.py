"""Who is asking: the client's address mapped to a group, or refused.

The agent must never be an open resolver, so a source address outside the configured client
networks is refused before anything else is looked at. Groups are filled in by the policy; until
then every allowed client belongs to the default group.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from schoolgate.agent.policy.decision import Action, Decision

_MEMO_LIMIT: Final = 65_536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Group:
    """A group of clients sharing one policy; it owns the memo of its decisions."""

    __slots__ = ("actions", "memo", "name", "name_memo")

    def __init__(self, name: str, actions: Mapping[str, Action] | None = None) -> None:
        self.name = name
        # The action for each category; a category missing here is blocked.
        self.actions: Mapping[str, Action] = actions or {}
        # Decisions by query key and by bare name (CNAME targets), for this policy version.
        self.memo: dict[bytes, Decision] = {}
        self.name_memo: dict[bytes, Decision] = {}

    def __repr__(self) -> str:
        return f"Group({self.name!r})"


class Client:
    """A client as the pipeline knows it."""

    __slots__ = ("address", "group")

    def __init__(self, address: str, group: Group) -> None:
        self.address = address
        self.group = group


class ClientIdentifier:
    """Maps a source address to a ``Client`` (memoized), or None when it must be refused."""

    def __init__(self, networks: Iterable[Network], default_group: Group) -> None:
        self._v4 = tuple(n for n in networks if n.version == 4)
        self._v6 = tuple(n for n in networks if n.version == 6)
        self._default = default_group
        # Address -> client, or None for an address to refuse; read directly by the query path.
        self.memo: dict[str, Client | None] = {}

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
        return Client(str(ip), self._default)
