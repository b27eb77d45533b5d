"""Which group a device belongs to: by address, MAC address or DHCP name, in a stated order.

Overlaps that can be seen in the configuration (one MAC in two groups, overlapping networks,
one name pattern covering another) are refused when it is loaded unless both groups say which
wins with ``order``. Overlaps only the network can show, a device whose MAC is in one group
and whose address is in another, go to the group with the lower ``order``; between groups
without one, the more specific member wins (a MAC over a name over an address, a longer
network prefix over a shorter one), then the group written first, and the log says so once.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from schoolgate.agent.policy.identity import Device

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_UNORDERED: Final = 1 << 30
_BY_MAC, _BY_NAME, _BY_ADDRESS = 0, 1, 2


@dataclass(frozen=True)
class GroupRule:
    """A group's members, as the configuration gives them."""

    name: str
    networks: tuple[Network, ...] = ()
    macs: frozenset[str] = frozenset()
    hostnames: tuple[str, ...] = ()  # lowercase glob patterns
    order: int = 0  # 0: no order given

    def how(self, ip: Address, device: Device | None) -> tuple[int, int] | None:
        """(kind, prefix length) of the most specific member matching, or None."""
        if device is not None and device.mac and device.mac in self.macs:
            return (_BY_MAC, 0)
        if (
            device is not None
            and device.hostname
            and any(fnmatch.fnmatchcase(device.hostname, p) for p in self.hostnames)
        ):
            return (_BY_NAME, 0)
        prefixes = [n.prefixlen for n in self.networks if ip.version == n.version and ip in n]
        if prefixes:
            return (_BY_ADDRESS, -max(prefixes))
        return None


def overlaps(a: GroupRule, b: GroupRule) -> str | None:
    """What two groups' members have in common that the configuration itself shows."""
    shared = sorted(a.macs & b.macs)
    if shared:
        return f"MAC address {shared[0]}"
    for x in a.networks:
        for y in b.networks:
            if x.version == y.version and x.overlaps(y):
                return f"networks {x} and {y}"
    for p in a.hostnames:
        for q in b.hostnames:
            if patterns_may_meet(p, q):
                return f"name patterns {p!r} and {q!r}"
    return None


_WILD: Final = "*?["


def patterns_may_meet(p: str, q: str) -> bool:
    """Could one DHCP name match both glob patterns?

    Erring towards yes: two patterns meet unless their fixed beginnings or their fixed endings
    differ. ``ks2-*`` and ``staff-*`` cannot meet; ``ks2-*`` and ``*-laptop`` can
    (``ks2-laptop``), and so can ``ks2-*`` and ``ks2-lab-?``. Saying yes to a pair that in fact
    never meets costs the school one ``order`` key; saying no to a pair that meets would let a
    device's group depend on which group was written first.
    """
    if not any(c in _WILD for c in p + q):
        return p == q
    if not any(c in _WILD for c in p):
        return fnmatch.fnmatchcase(p, q)
    if not any(c in _WILD for c in q):
        return fnmatch.fnmatchcase(q, p)
    head_p, head_q = _fixed_head(p), _fixed_head(q)
    tail_p, tail_q = _fixed_head(p[::-1]), _fixed_head(q[::-1])
    return (head_p.startswith(head_q) or head_q.startswith(head_p)) and (
        tail_p.startswith(tail_q) or tail_q.startswith(tail_p)
    )


def _fixed_head(pattern: str) -> str:
    """The literal characters before the first wildcard."""
    for i, c in enumerate(pattern):
        if c in _WILD or c == "]":
            return pattern[:i]
    return pattern


class GroupMatcher:
    def __init__(self, rules: Sequence[GroupRule], default: str) -> None:
        self.rules = tuple(rules)
        self.default = default
        self._warned: set[tuple[str, ...]] = set()

    def match(self, ip: Address, device: Device | None) -> str:
        """The name of the group a device belongs to; the default group when none claims it."""
        found = []
        for index, rule in enumerate(self.rules):
            how = rule.how(ip, device)
            if how is not None:
                found.append(((rule.order or _UNORDERED, *how, index), rule))
        if not found:
            return self.default
        found.sort(key=lambda item: item[0])
        winner = found[0][1]
        if len(found) > 1 and not winner.order:
            names = tuple(rule.name for _, rule in found)
            if names not in self._warned:
                self._warned.add(names)
                log.warning(
                    "device %s (%s) matches the groups %s; it goes to %s, the most specific."
                    " Give the groups an order to decide it yourself.",
                    ip,
                    device.mac if device is not None and device.mac else "MAC unknown",
                    ", ".join(names),
                    winner.name,
                )
        return winner.name
