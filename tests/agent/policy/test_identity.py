"""Devices from the neighbour table and from dnsmasq, ISC dhcpd and Kea lease files."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolgate.agent.policy import identity
from schoolgate.agent.policy.identity import (
    Device,
    Lease,
    device_map,
    normalize_mac,
    parse_arp,
    parse_ip_neigh,
    parse_leases,
    read_lease_files,
)

NOW = 1_800_000_000.0

ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.20.1.5        0x1         0x2         AA:BB:CC:00:00:05     *        eth0
10.20.1.6        0x1         0x0         00:00:00:00:00:00     *        eth0
10.20.1.7        0x1         0x2         aa:bb:cc:00:00:07     *        eth0
not-an-ip        0x1         0x2         aa:bb:cc:00:00:08     *        eth0
"""

NEIGH = """fd00::5 dev eth0 lladdr aa:bb:cc:00:00:05 REACHABLE
fe80::7%eth0 dev eth0 lladdr aa:bb:cc:00:00:07 router STALE
fd00::9 dev eth0 FAILED
fd00::10 dev eth0 lladdr
"""

DNSMASQ = f"""{int(NOW) + 600} aa:bb:cc:00:00:05 10.20.1.5 KS2-Lab-01 01:aa:bb:cc:00:00:05
{int(NOW) - 600} aa:bb:cc:00:00:06 10.20.1.6 expired-pc *
0 aa:bb:cc:00:00:07 10.20.1.7 * *
duid 00:01:00:01:2c:aa:bb:cc
{int(NOW) + 600} 12345678 fd00::5 ks2-lab-01 00:01:00:01
"""

ISC = """# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;

lease 10.20.2.5 {
  starts 4 2027/01/14 08:00:00;
  ends 4 2027/01/14 20:00:00;
  binding state active;
  hardware ethernet aa:bb:cc:00:01:05;
  client-hostname "staff-laptop-3";
}
lease 10.20.2.6 {
  ends 4 2027/01/14 20:00:00;
  binding state active;
  hardware ethernet aa:bb:cc:00:01:06;
  client-hostname "old-name";
}
lease 10.20.2.6 {
  ends 4 2027/01/14 20:00:00;
  binding state free;
  hardware ethernet aa:bb:cc:00:01:06;
}
lease 10.20.2.7 {
  ends 4 2020/01/01 00:00:00;
  binding state active;
  hardware ethernet aa:bb:cc:00:01:07;
}
"""

KEA_HEADER = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname"
KEA = f"""{KEA_HEADER},state,user_context
10.20.3.5,aa:bb:cc:00:02:05,01:aa,3600,{int(NOW) + 600},1,0,0,Guest-Phone.school.example.,0,
10.20.3.6,aa:bb:cc:00:02:06,01:aa,3600,{int(NOW) + 600},1,0,0,gone,0,
10.20.3.6,aa:bb:cc:00:02:06,01:aa,3600,{int(NOW) + 600},1,0,0,gone,2,
10.20.3.7,aa:bb:cc:00:02:07,01:aa,3600,{int(NOW) - 10},1,0,0,expired,0,
"""


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
        ("aa-bb-cc-dd-ee-ff", "aa:bb:cc:dd:ee:ff"),
        ("aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"),
        ("aa:bb:cc:dd:ee", None),
        ("aa:bb:cc:dd:ee:fg", None),
        ("", None),
    ],
)
def test_macs_are_normalized(text: str, mac: str | None) -> None:
    assert normalize_mac(text) == mac


def test_the_arp_table_gives_complete_entries() -> None:
    assert parse_arp(ARP) == {"10.20.1.5": "aa:bb:cc:00:00:05", "10.20.1.7": "aa:bb:cc:00:00:07"}


def test_ip_neigh_gives_usable_entries() -> None:
    assert parse_ip_neigh(NEIGH) == {
        "fd00::5": "aa:bb:cc:00:00:05",
        "fe80::7": "aa:bb:cc:00:00:07",
    }


def test_dnsmasq_leases() -> None:
    assert parse_leases(DNSMASQ, NOW) == [
        Lease("10.20.1.5", "aa:bb:cc:00:00:05", "ks2-lab-01", NOW + 600),
        Lease("10.20.1.7", "aa:bb:cc:00:00:07", "", 0.0),
        Lease("fd00::5", "", "ks2-lab-01", NOW + 600),
    ]


def test_isc_leases_take_the_last_block_and_skip_free_and_expired() -> None:
    now = 1_800_000_000.0  # 2027-01-15, after every "ends"
    leases = parse_leases(ISC, 1_768_000_000.0)  # 2026-01-09, before every "ends" but 2020's
    assert [(x.ip, x.mac, x.hostname) for x in leases] == [
        ("10.20.2.5", "aa:bb:cc:00:01:05", "staff-laptop-3")
    ]
    assert leases[0].expires == 1_799_956_800.0  # 2027-01-14 20:00:00 UTC
    assert parse_leases(ISC, now) == []


ISC_ENDS = """
lease 10.20.2.10 {
  ends epoch 1799956800; # Thu Jan 14 20:00:00 2027
  binding state active;
  client-hostname "by-epoch";
}
lease 10.20.2.11 {
  ends never;
  binding state active;
  client-hostname "never-ends";
}
lease 10.20.2.12 {
  ends sometime soon;
  binding state active;
  client-hostname "garbled";
}
lease 10.20.2.13 {
  ends epoch;
  binding state active;
}
lease 10.20.2.14 {
  binding state active;
  client-hostname "no-end";
}
"""


def test_isc_ends_in_each_form_and_unreadable_ends_are_not_current() -> None:
    leases = parse_leases(ISC_ENDS, 1_768_000_000.0)
    assert [(x.hostname, x.expires) for x in leases] == [
        ("by-epoch", 1_799_956_800.0),
        ("never-ends", 0.0),
        ("no-end", 0.0),
    ]
    later = parse_leases(ISC_ENDS, 1_800_000_000.0)
    assert [x.hostname for x in later] == ["never-ends", "no-end"]


def test_kea_leases_use_the_last_row_and_state() -> None:
    assert parse_leases(KEA, NOW) == [
        Lease("10.20.3.5", "aa:bb:cc:00:02:05", "guest-phone", NOW + 600)
    ]


def test_a_missing_or_unreadable_file_costs_only_its_own_entries(tmp_path: Path) -> None:
    good = tmp_path / "dnsmasq.leases"
    good.write_text("0 aa:bb:cc:00:00:01 10.0.0.1 pc1 *\n", encoding="utf-8")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe not a lease file \x00\n")
    leases = read_lease_files([tmp_path / "missing.leases", garbage, good])
    assert [(x.ip, x.hostname) for x in leases] == [("10.0.0.1", "pc1")]


def test_the_wire_beats_a_stale_lease() -> None:
    leases = [
        Lease("10.0.0.1", "aa:bb:cc:00:00:01", "pc1", 0),
        Lease("10.0.0.2", "aa:bb:cc:00:00:02", "pc2", 0),
    ]
    devices = device_map({"10.0.0.2": "aa:bb:cc:00:00:99", "10.0.0.3": "aa:bb:cc:00:00:03"}, leases)
    assert devices == {
        "10.0.0.1": Device("aa:bb:cc:00:00:01", "pc1"),
        # Another device has the address now: the old lease's name is not its name.
        "10.0.0.2": Device("aa:bb:cc:00:00:99", ""),
        "10.0.0.3": Device("aa:bb:cc:00:00:03", ""),
    }


def test_an_ip_command_that_fails_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As under a sandbox that refuses it the calls it needs: it exits 1 and reads nothing.
    ip = tmp_path / "ip"
    ip.write_text("#!/bin/sh\necho 'Operation not permitted' >&2\nexit 1\n", encoding="utf-8")
    ip.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(identity, "_warned", set())
    arp = tmp_path / "arp"
    arp.write_text("IP address HW type Flags HW address Mask Device\n", encoding="utf-8")
    for _ in range(3):
        assert identity.read_neighbours(arp) == {}
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read the IPv6 neighbour table with 'ip -6 neigh' (exit 1: Operation not permitted)"
    ]
