"""The device watch: ARP, DHCP and other resolvers' traffic read off the LAN interfaces, in a
thread of its own.

The kernel does the filtering (a BPF program that scapy builds with tcpdump), so the thread
only wakes for the few packets that matter: ARP and DHCP, which every device sends and which
name it, and packets to port 53 (DNS) or 853 (DNS over TLS) of a host that is not this
gateway, which are a device asking another resolver than the school's: a way round the
filter. Packets the gateway sends itself are skipped.

Everything here runs in the capture thread; what it finds reaches the event loop through the
``deliver`` callback, which must be safe to call from another thread.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.monitor.devices import DeviceInventory

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.sendrecv import AsyncSniffer

log = logging.getLogger(__name__)

BPF_FILTER: Final = (
    "arp or (udp and (port 67 or port 68)) or ((udp or tcp) and (dst port 53 or dst port 853))"
)
# A device asking a foreign resolver is reported once per target and port in this time.
BYPASS_QUIET: Final = 600.0
_BYPASS_LIMIT: Final = 65_536
_VIA: Final = {53: "dns-traffic", 853: "dot-traffic"}
_HOSTNAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DHCP_ACK: Final = 5


class CaptureError(Exception):
    """The monitor cannot capture; the message says why and what to do."""


def hostname_from_dhcp(raw: bytes | str) -> str:
    """The first label of the name a device gave DHCP (option 12), lowercase; '' when it is
    not a usable name (a hostile device can send any bytes)."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    label = text.strip().lower().split(".", 1)[0]
    return label if _HOSTNAME.fullmatch(label) else ""


def own_macs(interfaces: Sequence[str]) -> frozenset[str]:
    import psutil  # noqa: PLC0415 - only the monitor needs it

    found: set[str] = set()
    for name, addresses in psutil.net_if_addrs().items():
        if name in interfaces:
            found.update(a.address.lower() for a in addresses if a.family == psutil.AF_LINK)
    return frozenset(found)


class DeviceWatch:
    def __init__(
        self,
        interfaces: Sequence[str],
        inventory: DeviceInventory,
        deliver: Callable[[list[Event]], None],
    ) -> None:
        self.interfaces = tuple(interfaces)
        self.inventory = inventory
        self.deliver = deliver
        self.packets = {"arp": 0, "dhcp": 0, "resolver": 0, "unreadable": 0}
        self.bypass = {"dns-traffic": 0, "dot-traffic": 0}  # bypass events raised
        self._own: frozenset[str] = frozenset()
        self._own_addresses: frozenset[str] = frozenset()
        self._reported: dict[tuple[str, str, int], float] = {}
        self._sniffer: AsyncSniffer | None = None
        self._sockets: list[Any] = []

    @property
    def running(self) -> bool:
        return self._sniffer is not None

    def start(self) -> None:
        """Open the capture on every interface now, so a missing capability, interface or
        tcpdump is reported here; then read in the background."""
        try:
            # The layers register the link types and ports scapy decodes by: imported first.
            import scapy.layers.dhcp  # noqa: PLC0415 - heavy, and optional
            import scapy.layers.inet  # noqa: PLC0415
            import scapy.layers.inet6  # noqa: PLC0415
            import scapy.layers.l2  # noqa: F401, PLC0415
            from scapy.arch.linux import L2ListenSocket  # noqa: PLC0415
            from scapy.error import Scapy_Exception  # noqa: PLC0415
            from scapy.sendrecv import AsyncSniffer  # noqa: PLC0415
        except ImportError as exc:  # not Linux, or scapy broken
            raise CaptureError(f"packet capture is not available here: {exc}") from None
        if shutil.which("tcpdump") is None:
            raise CaptureError(
                "tcpdump is not installed; it builds the kernel's packet filter"
                " (apt-get install tcpdump)"
            )
        self._own = own_macs(self.interfaces)
        self._own_addresses = own_addresses()
        sockets = []
        try:
            for name in self.interfaces:
                sockets.append(L2ListenSocket(iface=name, filter=BPF_FILTER))
        except PermissionError:
            self._close(sockets)
            raise CaptureError(
                "capturing packets needs root or the CAP_NET_RAW capability"
            ) from None
        except (OSError, ValueError, Scapy_Exception) as exc:
            self._close(sockets)
            raise CaptureError(f"cannot capture on {', '.join(self.interfaces)}: {exc}") from None
        self._sockets = sockets
        sniffer = AsyncSniffer(opened_socket=sockets, prn=self._packet, store=False)
        sniffer.start()
        self._sniffer = sniffer

    def stop(self) -> None:
        sniffer, self._sniffer = self._sniffer, None
        if sniffer is not None:
            try:
                sniffer.stop(join=True)
            except Exception as exc:
                log.debug("device watch stopped with %s", exc)
        self._close(self._sockets)
        self._sockets = []

    @staticmethod
    def _close(sockets: list[Any]) -> None:
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _packet(self, packet: Packet) -> None:
        """One captured packet (in the capture thread). Never raises: a malformed packet is
        counted and skipped."""
        try:
            events = self._read(packet)
        except Exception:
            self.packets["unreadable"] += 1
            return
        if events:
            self.deliver(events)

    def _resolver(self, packet: Packet, now: float) -> list[Event]:
        """A packet to port 53 or 853 of another host: a device using a resolver that is not
        the school's. One event per device, target and port in BYPASS_QUIET."""
        from scapy.layers.inet import IP, TCP, UDP  # noqa: PLC0415
        from scapy.layers.inet6 import IPv6  # noqa: PLC0415
        from scapy.layers.l2 import Ether  # noqa: PLC0415

        if Ether in packet and str(packet[Ether].src).lower() in self._own:
            return []  # the gateway's own queries (the agent's upstreams)
        ip = packet.getlayer(IP)
        if ip is None:
            ip = packet.getlayer(IPv6)
        layer = packet.getlayer(TCP)
        if layer is None:
            layer = packet.getlayer(UDP)
        if ip is None or layer is None or int(layer.dport) not in _VIA:
            return []
        if TCP in packet and not int(packet[TCP].flags) & 0x02:
            return []  # a connection: only its SYN is an attempt
        client, target = str(ip.src), str(ip.dst).lower()
        if target in self._own_addresses:
            return []  # asking the agent, as it should
        self.packets["resolver"] += 1
        port = int(layer.dport)
        key = (client, target, port)
        last = self._reported.get(key)
        if last is not None and 0 <= now - last < BYPASS_QUIET:
            return []
        if len(self._reported) >= _BYPASS_LIMIT:
            self._reported.clear()
        self._reported[key] = now
        via = _VIA[port]
        self.bypass[via] += 1
        mac = str(packet[Ether].src).lower() if Ether in packet else ""
        return [
            Event(
                kind=EventKind.BYPASS,
                time=now,
                client_ip=client,
                mac=mac,
                name=target,
                data={"via": via, "port": port, "protocol": "tcp" if TCP in packet else "udp"},
            )
        ]

    def _read(self, packet: Packet) -> list[Event]:
        from scapy.layers.dhcp import BOOTP, DHCP  # noqa: PLC0415
        from scapy.layers.l2 import ARP  # noqa: PLC0415

        now = time.time()
        if ARP in packet:
            arp = packet[ARP]
            mac = str(arp.hwsrc).lower()
            if mac in self._own:
                return []
            self.packets["arp"] += 1
            address = str(arp.psrc)
            return self.inventory.observe(mac, now, "" if address == "0.0.0.0" else address)
        if BOOTP not in packet or DHCP not in packet:
            return self._resolver(packet, now)
        bootp = packet[BOOTP]
        mac = ":".join(f"{b:02x}" for b in bytes(bootp.chaddr)[:6])
        options = {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple) and len(o) > 1}
        self.packets["dhcp"] += 1
        if bootp.op == 1:  # from the device: its name, and the address it has or asks for
            address = str(options.get("requested_addr") or "")
            if bootp.ciaddr and str(bootp.ciaddr) != "0.0.0.0":
                address = str(bootp.ciaddr)
            name = hostname_from_dhcp(options.get("hostname", b""))
            return self.inventory.observe(mac, now, address, name)
        if options.get("message-type") == _DHCP_ACK:  # the server's: the address it gave
            return self.inventory.observe(mac, now, str(bootp.yiaddr))
        return []


def own_addresses() -> frozenset[str]:
    """Every address of this machine: DNS sent to one of them is sent to the agent."""
    import psutil  # noqa: PLC0415

    found: set[str] = set()
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                found.add(a.address.split("%", 1)[0].lower())
    return frozenset(found)


def lan_interfaces(networks: Sequence[Any]) -> list[str]:
    """The interfaces with an IPv4 or IPv6 address inside one of the client networks, but for
    loopback: where the school's devices are."""
    import ipaddress  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    found = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        for a in addresses:
            try:
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback:
                continue
            if any(ip.version == n.version and ip in n for n in networks):
                found.append(name)
                break
    return found
