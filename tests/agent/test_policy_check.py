"""The filtering check that ``policy test`` prints and the agent reports: one function, on
real compiled lists, for the command line and the running agent alike."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schoolgate.agent import cli_policy
from schoolgate.agent.config import AgentConfig, parse
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.exceptions import PolicyException
from schoolgate.agent.policy_check import PolicyTestError, policy_test
from tests.support.compiled import compiled_lists

WEDNESDAY_MORNING = dt.datetime(2026, 11, 25, 10, 0)
WEDNESDAY_CLUB = dt.datetime(2026, 11, 25, 15, 45)


def school(tmp_path: Path) -> AgentConfig:
    return parse(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
        '[site]\ntimezone = "Europe/London"\n'
        "[sources]\ndefaults = false\n"
        '[[schedules]]\nname = "club"\ndays = ["wed"]\ntimes = ["15:30-16:30"]\n'
        '[[groups]]\nname = "ks2"\nage_tier = "ks2"\naddresses = ["10.20.2.0/24"]\n'
        'actions = { games = "block" }\nschedules = { club = { games = "allow" } }\n'
        '[[groups]]\nname = "staff"\nage_tier = "staff"\ndefault = true\n'
        'actions = { games = "allow" }\n',
        "test.toml",
        base=tmp_path,
    )


@pytest.fixture
def lists(tmp_path: Path) -> Iterator[CompiledLists]:
    # The games probe, and a confidential list of the locked tier with a site's own probe.
    by_category = {"games": "roblox.com\n", "child-abuse": "abuse-probe.example\n"}
    (tmp_path / "lists").mkdir()
    with compiled_lists(tmp_path / "lists", by_category) as built:
        yield built


def results(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["group"], r["category"]): r for r in data["results"]}


def test_every_group_and_category_is_checked_and_reported(
    tmp_path: Path, lists: CompiledLists
) -> None:
    config = school(tmp_path)
    result = policy_test(config, lists, moment=WEDNESDAY_MORNING, exceptions=())
    data = result.data()
    assert list(data) == [
        "at",
        "timezone",
        "schedules_on",
        "exceptions",
        "lists",
        "results",
        "summary",
    ]
    assert data["at"] == "2026-11-25 10:00" and data["timezone"] == "Europe/London"
    assert (data["schedules_on"], data["exceptions"]) == ([], 0)
    assert data["lists"] == {"build": lists.build_id, "names": 2, "in_service": True}
    assert len(data["results"]) == 2 * len(list(config.taxonomy))

    found = results(data)
    assert found["ks2", "games"] == {
        "group": "ks2",
        "category": "games",
        "tier": "productivity",
        "probe": "roblox.com",
        "site_probe": False,
        "expected": "block",
        "actual": "block",
        "decided_by": "games",
        "rule": "category",
        "result": "ok",
        "note": "",
    }
    staff = found["staff", "games"]
    assert (staff["expected"], staff["actual"], staff["result"]) == ("allow", "allow", "ok")
    # A category with a probe but no list: the filter cannot do what the policy says.
    streaming = found["ks2", "streaming"]
    assert (streaming["result"], streaming["note"]) == ("mismatch", "no list of this category")
    summary = data["summary"]
    assert summary["mismatches"] == sum(1 for r in data["results"] if r["result"] == "mismatch")
    assert summary["passed"] is False and summary["strict"] is False
    assert summary["checks"] == sum(1 for r in data["results"] if r["probe"])


def test_schedules_on_at_the_moment_change_what_is_expected(
    tmp_path: Path, lists: CompiledLists
) -> None:
    result = policy_test(school(tmp_path), lists, moment=WEDNESDAY_CLUB, exceptions=())
    data = result.data()
    assert data["schedules_on"] == ["club"]
    games = results(data)["ks2", "games"]
    assert (games["expected"], games["actual"], games["result"]) == ("allow", "allow", "ok")


def test_an_exception_in_force_is_reported_as_an_override(
    tmp_path: Path, lists: CompiledLists
) -> None:
    allowed = PolicyException(
        id="e1",
        name="roblox.com",
        group="ks2",
        action="allow",
        expires=4_000_000_000.0,
        reason="chess club",
        created=1_700_000_000.0,
        by="ana",
    )
    result = policy_test(school(tmp_path), lists, moment=WEDNESDAY_MORNING, exceptions=[allowed])
    data = result.data()
    games = results(data)["ks2", "games"]
    assert (games["expected"], games["actual"], games["result"]) == ("block", "allow", "override")
    assert games["note"].startswith("exception")
    assert data["exceptions"] == 1 and data["summary"]["overrides"] == 1


def test_a_locked_categorys_probe_is_never_quoted(tmp_path: Path, lists: CompiledLists) -> None:
    result = policy_test(
        school(tmp_path),
        lists,
        moment=WEDNESDAY_MORNING,
        exceptions=(),
        probes=[("child-abuse", "abuse-probe.example")],
    )
    data = result.data()
    for group in ("ks2", "staff"):
        locked = results(data)[group, "child-abuse"]
        assert (locked["probe"], locked["site_probe"], locked["result"]) == (None, True, "ok")
    assert "abuse-probe" not in json.dumps(data)
    assert "child-abuse" not in data["summary"]["without_probe"]


def test_groups_and_probes_must_be_the_configurations(tmp_path: Path, lists: CompiledLists) -> None:
    config = school(tmp_path)
    with pytest.raises(PolicyTestError, match="no group 'nobody'; the groups are ks2, staff"):
        policy_test(config, lists, moment=WEDNESDAY_MORNING, exceptions=(), groups=["nobody"])
    with pytest.raises(PolicyTestError, match="--probe: no category 'knitting'"):
        policy_test(
            config, lists, moment=WEDNESDAY_MORNING, exceptions=(), probes=[("knitting", "x.y")]
        )
    only = policy_test(config, lists, moment=WEDNESDAY_MORNING, exceptions=(), groups=["staff"])
    assert {r["group"] for r in only.data()["results"]} == {"staff"}
    assert [g.name for g in only.groups] == ["staff"]


def test_the_command_prints_what_the_function_computes(
    tmp_path: Path, lists: CompiledLists, capsys: pytest.CaptureFixture[str]
) -> None:
    config = school(tmp_path)
    expected = policy_test(
        config, lists, moment=WEDNESDAY_MORNING, exceptions=(), in_service=False
    ).data()

    def open_lists(_config: AgentConfig, _scratch: Path) -> tuple[CompiledLists, bool]:
        return lists, True  # as if compiled for the check

    code = cli_policy.test(config, open_lists, at=WEDNESDAY_MORNING, fmt="json")
    assert code == cli_policy.EXIT_MISMATCH  # streaming and others have no list here
    assert json.loads(capsys.readouterr().out) == expected
