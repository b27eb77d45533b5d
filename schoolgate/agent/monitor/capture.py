"""The device watch: ARP and DHCP read off the LAN interfaces, in a thread of its own.

The kernel does the filtering (a BPF program for ``arp or udp port 67/68`` that scapy builds
with tcpdump), so the thread only wakes for the few packets that name devices: every device
ARPs and asks DHCP, whatever else it does. Packets the gateway sends itself are skipped: it is
not one of the school's devices.

Everything here runs in the capture thread; what it finds reaches the event loop through the
``deliver`` callback, which must be safe to call from another thread.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from schoolgate.agent.activity.events import Event
from schoolgate.agent.monitor.devices import DeviceInventory

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.sendrecv import AsyncSniffer

log = logging.getLogger(__name__)

BPF_FILTER: Final = "arp or (udp and (port 67 or port 68))"
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
        self.packets = {"arp": 0, "dhcp": 0, "unreadable": 0}
        self._own: frozenset[str] = frozenset()
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
            import scapy.layers.l2  # noqa: F401, PLC0415
            from scapy.arch.linux import L2ListenSocket  # noqa: PLC0415
            from scapy.error import Scapy_Exception  # noqa: PLC0415
            from scapy.sendrecv import AsyncSniffer  # noqa: PLC0415
        except ImportError as exc:  # not Linux, or scapy broken
            raise CaptureError(f"packet capture is not available here: {exc}") from None
        self._own = own_macs(self.interfaces)
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
            hint = (
                " (is tcpdump installed? it builds the packet filter)"
                if "filter" in str(exc).lower()
                else ""
            )
            raise CaptureError(
                f"cannot capture on {', '.join(self.interfaces)}: {exc}{hint}"
            ) from None
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
            return []
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
