"""Bandwidth: interface counters turned into events, IP headers read from raw frames, and the
top talkers."""

from __future__ import annotations

import ipaddress
import struct
from collections import namedtuple

import pytest

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.monitor import bandwidth as bandwidth_mod
from schoolgate.agent.monitor.bandwidth import (
    DeviceBytes,
    frame_addresses,
    interface_events,
    top_talkers,
)

T0 = 1_795_269_900.0
Counts = namedtuple("Counts", "bytes_sent bytes_recv packets_sent packets_recv")
ETHER = b"\x00\x1b\x63\x00\x00\x07" * 2


def ipv4(source: str, destination: str, length: int, vlan: bool = False) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        length,
        0,
        0,
        64,
        17,
        0,
        ipaddress.ip_address(source).packed,
        ipaddress.ip_address(destination).packed,
    )
    tag = b"\x81\x00\x00\x0a" if vlan else b""
    return ETHER + tag + b"\x08\x00" + header + b"\x00" * 8


def ipv6(source: str, destination: str, payload: int) -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        payload,
        17,
        64,
        ipaddress.ip_address(source).packed,
        ipaddress.ip_address(destination).packed,
    )
    return ETHER + b"\x86\xdd" + header


def test_headers_are_read_from_the_raw_frame() -> None:
    src, dst = ipaddress.ip_address("10.20.2.7").packed, ipaddress.ip_address("192.0.2.1").packed
    assert frame_addresses(ipv4("10.20.2.7", "192.0.2.1", 1500)) == (src, dst, 1500)
    assert frame_addresses(ipv4("10.20.2.7", "192.0.2.1", 60, vlan=True)) == (src, dst, 60)
    six = frame_addresses(ipv6("fd00::7", "2001:db8::1", 1000))
    assert six is not None and six[2] == 1040
    assert frame_addresses(ETHER + b"\x08\x06" + b"\x00" * 28) is None  # ARP
    assert frame_addresses(ETHER + b"\x08\x00" + b"\x45") is None  # cut short
    assert frame_addresses(b"") is None


def test_bytes_are_added_up_per_lan_address_each_way() -> None:
    counter = DeviceBytes([], [ipaddress.ip_network("10.20.0.0/16")])
    counter._count(ipv4("10.20.2.7", "192.0.2.1", 1000))  # out
    counter._count(ipv4("192.0.2.1", "10.20.2.7", 3000))  # in
    counter._count(ipv4("10.20.2.8", "10.20.2.7", 500))  # both are the school's
    counter._count(ipv4("192.0.2.1", "198.51.100.1", 9999))  # neither
    assert counter.take() == {"10.20.2.7": (3500, 1000), "10.20.2.8": (0, 500)}
    assert counter.take() == {}  # taken: the next interval starts from nothing
    assert counter.packets == 4


def test_a_flood_of_addresses_waits_for_the_next_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bandwidth_mod, "_MAX_ADDRESSES", 10)
    counter = DeviceBytes([], [ipaddress.ip_network("10.0.0.0/8")])
    for i in range(100):
        counter._count(ipv4(f"10.0.{i // 256}.{i % 256}", "192.0.2.1", 100))
    assert len(counter.take()) == 10


def test_interface_counters_become_events_and_a_reset_counts_from_zero() -> None:
    before = {"eth1": Counts(1000, 5000, 10, 50), "gone": Counts(1, 1, 1, 1)}
    after = {"eth1": Counts(3000, 9000, 30, 90), "new": Counts(5, 5, 5, 5)}
    (event,) = interface_events(before, after, 60.0, T0)
    assert (event.kind, event.name) == (EventKind.BANDWIDTH, "eth1")
    assert event.data == {
        "interface": "eth1",
        "seconds": 60.0,
        "bytes_in": 4000,
        "bytes_out": 2000,
        "packets_in": 40,
        "packets_out": 20,
    }
    (reset,) = interface_events(after, {"eth1": Counts(100, 200, 1, 2)}, 60.0, T0)
    assert reset.data["bytes_in"] == 200 and reset.data["bytes_out"] == 100


def test_top_talkers_are_ranked_by_bytes_both_ways() -> None:
    counts = {"10.20.2.7": (100, 100), "10.20.2.8": (5000, 0), "10.20.2.9": (0, 300)}
    found = top_talkers(counts, 2, T0)
    assert [(e.client_ip, e.data["top"]) for e in found] == [("10.20.2.8", 1), ("10.20.2.9", 2)]
    assert found[0].data == {"top": 1, "bytes_in": 5000, "bytes_out": 0}
