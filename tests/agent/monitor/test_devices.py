"""The device inventory: new devices announced once, unapproved ones alerted once, bounded,
and kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.agent.monitor import devices as devices_mod
from schoolgate.agent.monitor.capture import hostname_from_dhcp
from schoolgate.agent.monitor.devices import DeviceInventory

T0 = 1_795_269_900.0
PUPIL = "00:1b:63:00:00:07"
LAPTOP = "00:1b:63:00:00:08"


def vendor(mac: str) -> str:
    return "Apple" if mac.startswith("00:1b:63") else ""


def inventory(tmp_path: Path, approved: tuple[str, ...] = ()) -> DeviceInventory:
    return DeviceInventory(tmp_path / "monitor" / "devices.json", approved, vendor)


def test_a_new_device_is_announced_once(tmp_path: Path) -> None:
    seen = inventory(tmp_path)
    (event,) = seen.observe(PUPIL, T0, "10.20.2.7", "ks2-lab-07")
    assert (event.kind, event.mac, event.client_ip, event.hostname) == (
        EventKind.DEVICE,
        PUPIL,
        "10.20.2.7",
        "ks2-lab-07",
    )
    assert event.data == {"seen": "new", "vendor": "Apple"}
    assert seen.observe(PUPIL, T0 + 60, "10.20.2.7") == []
    device = seen.devices[PUPIL]
    assert (device.first_seen, device.last_seen, device.hostname) == (T0, T0 + 60, "ks2-lab-07")
    assert seen.counts() == (1, 0)  # no approved list: nothing is unapproved


def test_an_unapproved_device_raises_one_alert(tmp_path: Path) -> None:
    seen = inventory(tmp_path, approved=(LAPTOP,))
    new, alert = seen.observe(PUPIL, T0, "10.20.2.7")
    assert new.data == {"seen": "new", "vendor": "Apple", "approved": False}
    assert (alert.kind, alert.severity, alert.mac) == (EventKind.ALERT, Severity.MEDIUM, PUPIL)
    assert alert.data == {"reason": "unapproved-device", "vendor": "Apple"}
    assert seen.observe(PUPIL, T0 + 1, "10.20.2.7") == []
    (approved,) = seen.observe(LAPTOP, T0, "10.20.0.20")
    assert approved.data["approved"] is True
    assert seen.counts() == (2, 1)


def test_addresses_are_kept_newest_last_and_bounded(tmp_path: Path) -> None:
    seen = inventory(tmp_path)
    for i in range(20):
        seen.observe(PUPIL, T0 + i, f"10.20.2.{i}")
    seen.observe(PUPIL, T0 + 30, "10.20.2.15")
    addresses = seen.devices[PUPIL].addresses
    assert len(addresses) == devices_mod.MAX_ADDRESSES and addresses[-1] == "10.20.2.15"


def test_the_inventory_survives_a_restart_without_announcing_again(tmp_path: Path) -> None:
    seen = inventory(tmp_path, approved=(LAPTOP,))
    seen.observe(PUPIL, T0, "10.20.2.7", "ks2-lab-07")
    seen.save()
    again = inventory(tmp_path, approved=(LAPTOP,))
    again.load()
    assert again.observe(PUPIL, T0 + 100, "10.20.2.7") == []  # neither new nor alerted again
    assert again.devices[PUPIL].hostname == "ks2-lab-07"


def test_a_broken_inventory_file_starts_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = inventory(tmp_path)
    seen.path.parent.mkdir(parents=True)
    seen.path.write_text('{"devices": [{"mac": 3, "colour": "red"}]}', encoding="utf-8")
    seen.load()
    assert seen.devices == {} and "cannot be read" in caplog.text


def test_a_flood_of_made_up_macs_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices_mod, "MAX_DEVICES", 100)
    seen = inventory(tmp_path)
    for i in range(1000):
        seen.observe(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", T0 + i)
    assert len(seen.devices) <= 100
    assert "02:00:00:00:03:e7" in seen.devices  # the newest stay


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"KS2-Lab-07", "ks2-lab-07"),
        (b"ks2-lab-07.school.example", "ks2-lab-07"),
        ("iPad", "ipad"),
        (b"<script>", ""),
        (b"\xff\xfe", ""),
        (b"", ""),
        (b"a" * 64, ""),
    ],
)
def test_dhcp_names_are_taken_only_when_they_are_names(raw: bytes | str, name: str) -> None:
    assert hostname_from_dhcp(raw) == name
