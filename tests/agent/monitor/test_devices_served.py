"""The device watch on real traffic: a veth pair between this machine and a "pupil" network
namespace the test makes; the pupil ARPs and asks DHCP for an address with its name, and the
agent's monitor, capturing on the gateway's end, records the devices and alerts for the one
the school has not approved.

Needs root (network namespaces, raw capture), iproute2 and tcpdump (``./dev test`` installs
it); skips with the reason otherwise.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schoolgate.agent.activity.events import EventKind
from tests.agent.test_activity_served import events
from tests.conftest import AgentFactory
from tests.support.waiting import wait_for

_TAGS = itertools.count()
UNAPPROVED = "00:1b:63:00:00:07"  # an Apple prefix: the vendor comes from the MAC registry
APPROVED = "00:1b:63:00:00:08"


@dataclass(frozen=True)
class Lan:
    namespace: str
    gateway: str  # the interface on this machine's side
    pupil: str  # the interface inside the namespace
    prefix: str  # "10.99.N"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and packet capture need root")
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (./dev test installs it)")
    # Fresh names each time: the kernel tears an old namespace down in the background.
    tag = (os.getpid() % 10_000) * 100 + next(_TAGS) % 100
    found = Lan(f"sg-pupil-{tag}", f"sggw{tag}", f"sgpl{tag}", f"10.99.{tag % 250}")
    try:
        run("ip", "netns", "add", found.namespace)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot make a network namespace here: {exc}")
    try:
        run("ip", "link", "add", found.gateway, "type", "veth", "peer", "name", found.pupil)
        run("ip", "link", "set", found.pupil, "netns", found.namespace)
        run("ip", "addr", "add", f"{found.prefix}.1/24", "dev", found.gateway)
        run("ip", "link", "set", found.gateway, "up")
        inside = ("ip", "netns", "exec", found.namespace)
        run(*inside, "ip", "link", "set", found.pupil, "address", UNAPPROVED)
        run(*inside, "ip", "addr", "add", f"{found.prefix}.7/24", "dev", found.pupil)
        run(*inside, "ip", "link", "set", found.pupil, "up")
        yield found
    finally:
        subprocess.run(["ip", "link", "del", found.gateway], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", found.namespace], capture_output=True, check=False)


def pupil_sends(lan: Lan) -> None:
    """From inside the namespace: an ARP for the gateway, a DHCP request with the device's
    name, and the same from a second (approved) MAC on the same wire."""
    code = f"""
from scapy.all import ARP, BOOTP, DHCP, IP, UDP, Ether, mac2str, sendp
iface = {lan.pupil!r}
for mac, ip, name in (({UNAPPROVED!r}, "{lan.prefix}.7", "KS2-Lab-07"),
                      ({APPROVED!r}, "{lan.prefix}.8", "staff-laptop")):
    sendp(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip,
          pdst="{lan.prefix}.1"), iface=iface, verbose=0)
    sendp(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
          / UDP(sport=68, dport=67) / BOOTP(chaddr=mac2str(mac), xid=7)
          / DHCP(options=[("message-type", "request"), ("requested_addr", ip),
                          ("hostname", name.encode()), "end"]), iface=iface, verbose=0)
"""
    subprocess.run(
        ["ip", "netns", "exec", lan.namespace, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_devices_on_the_wire_are_recorded_and_unapproved_ones_alerted(
    make_agent: AgentFactory, lan: Lan, tmp_path: Path
) -> None:
    agent = make_agent(
        f'\n[monitor]\ninterfaces = ["{lan.gateway}"]\napproved_macs = ["{APPROVED.upper()}"]\n',
        networks=f'"127.0.0.0/8", "{lan.prefix}.0/24"',
    )
    assert agent.agent is not None
    monitor = agent.agent.monitor
    assert monitor is not None and monitor.running
    pupil_sends(lan)
    wait_for(lambda: len(events(agent, kinds=(EventKind.DEVICE,))) == 2, timeout=15)
    wait_for(lambda: len(events(agent, kinds=(EventKind.ALERT,))) == 1, timeout=15)

    devices = {s.event.mac: s.event for s in events(agent, kinds=(EventKind.DEVICE,))}
    pupil = devices[UNAPPROVED]
    assert pupil.client_ip == f"{lan.prefix}.7"
    assert pupil.data == {"seen": "new", "vendor": "Apple", "approved": False}
    assert devices[APPROVED].data["approved"] is True
    (alert,) = [s.event for s in events(agent, kinds=(EventKind.ALERT,))]
    assert (alert.mac, alert.data["reason"]) == (UNAPPROVED, "unapproved-device")
    wait_for(lambda: monitor.inventory.devices[UNAPPROVED].hostname == "ks2-lab-07")
    assert monitor.inventory.counts() == (2, 1)
    assert monitor.watch is not None and monitor.watch.packets["dhcp"] >= 2

    # The gateway's own ARP replies are not a device of the school's.
    gateway_macs = set(monitor.watch._own)
    assert gateway_macs and not gateway_macs & set(monitor.inventory.devices)

    # Stopping saves the inventory: a restart neither forgets nor announces them again.
    agent.stop()
    saved = agent.agent.config.state_dir / "monitor" / "devices.json"
    assert UNAPPROVED in saved.read_text(encoding="utf-8")


def test_without_a_usable_interface_dns_carries_on(make_agent: AgentFactory) -> None:
    agent = make_agent('\n[monitor]\ninterfaces = ["sg-nosuch0"]\n')
    assert agent.agent is not None and agent.agent.monitor is None


def pupil_asks_resolvers(lan: Lan, gateway_mac: str) -> None:
    """From inside the namespace: DNS to a foreign resolver (twice), a DNS-over-TLS SYN to it,
    and DNS to the gateway itself, which is the school's resolver and no bypass."""
    code = f"""
from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether, sendp
iface, gw = {lan.pupil!r}, {gateway_mac!r}
src = "{lan.prefix}.7"
def send(packet):
    sendp(Ether(src={UNAPPROVED!r}, dst=gw) / packet, iface=iface, verbose=0)
question = DNS(qd=DNSQR(qname="a.example"))
for _ in range(2):
    send(IP(src=src, dst="192.0.2.53") / UDP(sport=40000, dport=53) / question)
send(IP(src=src, dst="192.0.2.53") / TCP(sport=40001, dport=853, flags="S"))
send(IP(src=src, dst="{lan.prefix}.1") / UDP(sport=40002, dport=53) / question)
"""
    subprocess.run(
        ["ip", "netns", "exec", lan.namespace, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_dns_and_dot_to_another_resolver_are_bypass_attempts(
    make_agent: AgentFactory, lan: Lan
) -> None:
    agent = make_agent(
        f'\n[monitor]\ninterfaces = ["{lan.gateway}"]\n',
        networks=f'"127.0.0.0/8", "{lan.prefix}.0/24"',
    )
    assert agent.agent is not None
    monitor = agent.agent.monitor
    assert monitor is not None and monitor.watch is not None
    (gateway_mac,) = monitor.watch._own
    pupil_asks_resolvers(lan, gateway_mac)
    wait_for(lambda: len(events(agent, kinds=(EventKind.BYPASS,))) == 2, timeout=15)
    found = sorted(
        (s.event.client_ip, s.event.mac, s.event.name, s.event.data["via"], s.event.data["port"])
        for s in events(agent, kinds=(EventKind.BYPASS,))
    )
    client = f"{lan.prefix}.7"
    assert found == [
        (client, UNAPPROVED, "192.0.2.53", "dns-traffic", 53),
        (client, UNAPPROVED, "192.0.2.53", "dot-traffic", 853),
    ]
    assert monitor.watch.bypass == {"dns-traffic": 1, "dot-traffic": 1}
    assert monitor.watch.packets["resolver"] == 3  # the two DNS and the SYN; not the gateway's


def test_bandwidth_per_interface_and_per_device(make_agent: AgentFactory, lan: Lan) -> None:
    agent = make_agent(
        f'\n[monitor]\ninterfaces = ["{lan.gateway}"]\n',
        networks=f'"127.0.0.0/8", "{lan.prefix}.0/24"',
    )
    assert agent.agent is not None
    monitor = agent.agent.monitor
    assert monitor is not None and monitor.watch is not None
    assert monitor.device_bytes is not None
    (gateway_mac,) = monitor.watch._own
    code = f"""
from scapy.all import IP, UDP, Ether, Raw, sendp
for _ in range(10):
    sendp(Ether(src={UNAPPROVED!r}, dst={gateway_mac!r})
          / IP(src="{lan.prefix}.7", dst="192.0.2.80") / UDP(sport=5000, dport=9000)
          / Raw(b"x" * 972), iface={lan.pupil!r}, verbose=0)
"""
    subprocess.run(
        ["ip", "netns", "exec", lan.namespace, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(lambda: monitor.device_bytes is not None and monitor.device_bytes.packets >= 10)
    found = agent.call(monitor.bandwidth())
    interface = [e for e in found if e.data.get("interface") == lan.gateway]
    assert interface and interface[0].data["packets_in"] >= 10
    assert interface[0].data["bytes_in"] >= 10 * 1000
    (talker,) = [e for e in found if "top" in e.data]
    assert (talker.client_ip, talker.data["top"]) == (f"{lan.prefix}.7", 1)
    assert talker.data["bytes_out"] == 10 * 1000  # the IP length: 20 + 8 + 972
    wait_for(lambda: len(events(agent, kinds=(EventKind.BANDWIDTH,))) == len(found))
