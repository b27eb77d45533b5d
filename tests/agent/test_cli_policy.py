"""``schoolgate-agent policy show`` and ``policy test`` as a process, on small local lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schoolgate.agent.cli_policy import EXIT_MISMATCH, WIDTH
from schoolgate.agent.policy.categories import bundled
from tests.support.process import run_agent_command

WEDNESDAY_CLUB = "2026-11-25 15:45"
WEDNESDAY_AFTER = "2026-11-25 16:30"


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_agent_command(*args, "--state-dir", str(state))


def school(tmp_path: Path, lists: str = "") -> Path:
    """Two groups and a club schedule, over one small list per category with a bundled probe
    (holding that probe), so that every probe of the taxonomy is found and nothing is
    downloaded."""
    entries = []
    for category in bundled():
        if category.probe:
            path = tmp_path / f"{category.id}.txt"
            path.write_text(f"# test list\n{category.probe}\n", encoding="utf-8")
            entries.append(
                f'[[lists]]\nname = "{category.id}-test"\ncategory = "{category.id}"\n'
                f'path = "{path}"\n'
            )
    config = tmp_path / "agent.toml"
    config.write_text(
        '[site]\ntimezone = "Europe/London"\n'
        "[sources]\ndefaults = false\n"
        "[identity]\nneighbours = false\n"
        '[[schedules]]\nname = "club"\ndays = ["wed"]\ntimes = ["15:30-16:30"]\n'
        '[[groups]]\nname = "ks2"\nage_tier = "ks2"\naddresses = ["10.20.2.0/24"]\n'
        'hostnames = ["ks2-*"]\nallow = ["khanacademy.org"]\n'
        'schedules = { club = { games = "allow" } }\n'
        '[[groups]]\nname = "guests"\nage_tier = "guest"\ndefault = true\n'
        + "".join(entries)
        + lists,
        encoding="utf-8",
    )
    return config


def policy(config: Path, *args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return cli("policy", *args, "--config", str(config), state=state)


def results(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["group"], r["category"]): r for r in json.loads(out)["results"]}


def row(out: str, group: str, category: str) -> str:
    """The line of the test's (or show's) table for ``category`` in ``group``'s section."""
    section = out.split(f"group {group}:", 1)[1].split("\ngroup ", 1)[0]
    for line in section.splitlines():
        cells = line.replace(">>", "").split()
        if category in cells[:2]:
            return line
    raise AssertionError(f"no row for {category} in group {group}")


def test_show_prints_every_group_category_and_schedule(tmp_path: Path) -> None:
    result = policy(school(tmp_path), "show", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert all(len(line) <= WIDTH for line in out.splitlines())
    assert "    club  wed 15:30-16:30" in out
    assert "group ks2: age tier ks2\n" in out
    assert "group guests: age tier guest (the default group)" in out
    assert "members:     addresses 10.20.2.0/24; DHCP names ks2-*" in out
    assert "allow:       khanacademy.org" in out
    assert "members:     every device no other group claims" in out
    # Only the schedules a group uses get a column; locked categories come first.
    ks2 = out.split("group ks2:")[1].split("group guests:")[0]
    assert "TIER             CATEGORY        OUTSIDE  club   NAME" in ks2
    assert ks2.index("child-abuse") < ks2.index("self-harm") < ks2.index("shopping")
    assert row(out, "ks2", "games").split() == ["games", "BLOCK", "allow", "Games"]
    assert row(out, "ks2", "self-harm").split()[:4] == ["safeguarding", "self-harm", "B+A", "B+A"]
    guests = out.split("group guests:")[1]
    assert "club" not in guests
    assert row(out, "guests", "games").split() == ["games", "allow", "Games"]


def test_show_in_another_language(tmp_path: Path) -> None:
    out = policy(school(tmp_path), "show", "--language", "zh", state=tmp_path / "s").stdout
    assert row(out, "ks2", "games").split() == ["games", "BLOCK", "allow", "游戏"]


def test_show_as_json(tmp_path: Path) -> None:
    result = policy(school(tmp_path), "show", "--format", "json", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["timezone"] == "Europe/London"
    assert data["schedules"] == [
        {"name": "club", "days": ["wed"], "times": ["15:30-16:30"], "dates": [], "except_dates": []}
    ]
    assert data["categories"][0] == {
        "id": "child-abuse",
        "tier": "locked",
        "name": "Child sexual abuse material",
        "site": False,
    }
    ks2, guests = data["groups"]
    assert (ks2["name"], ks2["default"], ks2["age_tier"]) == ("ks2", False, "ks2")
    assert ks2["members"] == {"addresses": ["10.20.2.0/24"], "macs": [], "hostnames": ["ks2-*"]}
    assert (ks2["allow"], ks2["deny"]) == (["khanacademy.org"], [])
    assert ks2["actions"]["games"] == "block"
    assert ks2["schedules"]["club"]["games"] == "allow"
    assert ks2["schedules"]["club"]["social"] == "block"  # not changed: the base action
    assert set(ks2["actions"]) == {c["id"] for c in data["categories"]}
    assert ks2["settings"]["youtube"] == "strict" and "google" in ks2["settings"]["safesearch"]
    assert guests["default"] and guests["schedules"] == {}
    assert guests["actions"]["games"] == "allow"


def test_the_check_passes_when_every_probe_is_filtered_as_configured(tmp_path: Path) -> None:
    result = policy(school(tmp_path), "test", "--at", WEDNESDAY_AFTER, state=tmp_path / "s")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert all(len(line) <= WIDTH for line in out.splitlines())
    probed = sum(1 for c in bundled() if c.probe)
    without = sum(1 for c in bundled() if not c.probe)
    summary = (
        f"{2 * probed} checks, 0 mismatches, 0 decided by allow or deny entries or exceptions,"
        f" {without} categories without a probe"
    )
    assert summary in " ".join(out.split())
    assert out.rstrip().endswith("passed")
    assert row(out, "ks2", "games").split() == ["games", "roblox.com", "BLOCK", "BLOCK", "ok"]
    assert row(out, "guests", "games").split() == ["games", "roblox.com", "allow", "allow", "ok"]
    assert row(out, "ks2", "adult").split() == ["adult", "-", "BLOCK", "-", "no", "probe"]
    assert ">>" not in out


def test_a_probe_the_lists_miss_is_a_mismatch(tmp_path: Path) -> None:
    result = policy(
        school(tmp_path),
        "test",
        "--at",
        WEDNESDAY_AFTER,
        "--probe",
        "games=notinanylist.example",
        state=tmp_path / "s",
    )
    assert result.returncode == EXIT_MISMATCH
    line = row(result.stdout, "ks2", "games")
    assert line.startswith(">>")
    assert line.split()[1:6] == ["games", "notinanylist.example", "BLOCK", "-", "MISMATCH"]
    assert "not in the category's lists" in line
    # Where games are allowed the name still is not a game as far as the filter knows.
    assert row(result.stdout, "guests", "games").startswith(">>")
    assert "2 mismatches" in result.stdout and "FAILED" in result.stdout


def test_an_allow_list_that_overrides_a_category_is_reported_not_failed(tmp_path: Path) -> None:
    # The school's own allow entry is its choice: shown and counted, but the filter did what
    # it was told.
    config = school(tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        'allow = ["khanacademy.org"]', 'allow = ["khanacademy.org", "roblox.com"]'
    )
    config.write_text(text, encoding="utf-8")
    result = policy(config, "test", "--at", WEDNESDAY_AFTER, state=tmp_path / "s")
    assert result.returncode == 0, result.stdout
    line = row(result.stdout, "ks2", "games")
    assert line.split()[:5] == ["games", "roblox.com", "BLOCK", "allow", "override"]
    assert line.rstrip().endswith("allow list")
    assert "1 decided by allow or deny entries or exceptions" in result.stdout


def test_the_moment_decides_which_schedules_are_on(tmp_path: Path) -> None:
    config = school(tmp_path)

    def at(moment: str) -> subprocess.CompletedProcess[str]:
        args = ("test", "--at", moment, "--format", "json", "--client-of", "ks2")
        return policy(config, *args, state=tmp_path / "s")

    in_club, after = at(WEDNESDAY_CLUB), at(WEDNESDAY_AFTER)
    assert in_club.returncode == 0 and after.returncode == 0, in_club.stdout + after.stdout
    assert json.loads(in_club.stdout)["schedules_on"] == ["club"]
    assert json.loads(after.stdout)["schedules_on"] == []
    during = results(in_club.stdout)[("ks2", "games")]
    outside = results(after.stdout)[("ks2", "games")]
    assert (during["expected"], during["actual"], during["result"]) == ("allow", "allow", "ok")
    assert (outside["expected"], outside["actual"], outside["result"]) == ("block", "block", "ok")
    assert {group for group, _ in results(in_club.stdout)} == {"ks2"}
    text = policy(config, "test", "--at", WEDNESDAY_CLUB, state=tmp_path / "s").stdout
    assert "group ks2: age tier ks2; as while club is on" in text
    assert "time:       2026-11-25 15:45 (Europe/London); schedules on: club" in text


def test_a_locked_category_is_checked_with_a_site_probe_that_is_never_printed(
    tmp_path: Path,
) -> None:
    licensed = tmp_path / "licensed.txt"
    licensed.write_text("confidential-entry.example\n", encoding="utf-8")
    lists = (
        f'[[lists]]\nname = "licensed"\ncategory = "child-abuse"\npath = "{licensed}"\n'
        'format = "domains"\n'
    )
    config = school(tmp_path, lists=lists)
    probe = "child-abuse=www.confidential-entry.example"
    text = policy(config, "test", "--probe", probe, "--at", WEDNESDAY_AFTER, state=tmp_path / "s")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "confidential-entry" not in text.stdout
    for group in ("ks2", "guests"):
        cells = row(text.stdout, group, "child-abuse").split()
        assert cells == ["child-abuse", "(site", "probe)", "BLOCK", "BLOCK", "ok"]
    args = ("test", "--probe", probe, "--format", "json")
    data = policy(config, *args, state=tmp_path / "s").stdout
    assert "confidential-entry" not in data
    found = results(data)[("ks2", "child-abuse")]
    assert found["probe"] is None and found["site_probe"] and found["result"] == "ok"


def test_strict_fails_a_category_without_a_probe(tmp_path: Path) -> None:
    config = school(tmp_path)
    lenient = policy(config, "test", "--at", WEDNESDAY_AFTER, state=tmp_path / "s")
    assert lenient.returncode == 0
    strict = policy(config, "test", "--at", WEDNESDAY_AFTER, "--strict", state=tmp_path / "s")
    assert strict.returncode == EXIT_MISMATCH
    assert row(strict.stdout, "ks2", "adult").startswith(">>")
    assert "--strict: a category without a probe fails the check" in strict.stdout
    assert "0 mismatches" in strict.stdout and "FAILED" in strict.stdout
    data = json.loads(
        policy(config, "test", "--strict", "--format", "json", state=tmp_path / "s").stdout
    )
    assert "adult" in data["summary"]["without_probe"]
    assert data["summary"]["strict"] and not data["summary"]["passed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--client-of", "ks3"), "no group 'ks3'; the groups are ks2, guests"),
        (("--probe", "gamez=roblox.com"), "--probe: no category 'gamez'"),
        (("--probe", "games"), "expected CATEGORY=NAME"),
        (("--probe", "games=bad..name"), "is not a name"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = policy(school(tmp_path), "test", *args, state=tmp_path / "s")
    assert result.returncode == 2
    assert message in result.stderr
