"""The systemd units in systemd/: systemd accepts them, they are as confined as docs/deploy.md
says, they agree with the programs, and the configuration checks they run before a start work.

systemd need not be running: ``systemd-analyze verify`` and ``systemd-analyze security
--offline=true`` read the units from a scratch root that holds them, this machine's own
units (the targets they order against) and stand-ins for the programs.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent import cli as agent_cli
from schoolgate.agent.config import ServerSection
from schoolgate.agent.policy.identity import ARP_TABLE
from schoolgate.server.cli import main as collector_main
from tests.support.process import run_agent_command

UNITS = Path(__file__).resolve().parents[1] / "systemd"
AGENT = "schoolgate-agent.service"
COLLECTOR = "schoolgate-collector.service"
# The most exposure (systemd-analyze security: 0.0 confined to 10.0 unconfined) each unit may
# have; docs/deploy.md gives these and what systemd 252 measures.
EXPOSURE = {AGENT: 2.0, COLLECTOR: 1.5}
VENV_BIN = "/opt/schoolgate/venv/bin/"
BROKEN = '[server]\nlisten = ["nonsense"]\n'


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order (a key may be given more than once)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def words(unit: str, key: str) -> set[str]:
    return {word for value in settings(unit)[key] for word in value.split()}


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A file system root as the installer leaves it, as far as systemd looks."""
    system = next(
        (
            p
            for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
            if (p / "sysinit.target").is_file()
        ),
        None,
    )
    if system is None:
        pytest.skip("this machine has no systemd unit directory to order the units against")
    top = tmp_path_factory.mktemp("root")
    shutil.copytree(system, top / "usr/lib/systemd/system", symlinks=True)
    (top / "etc/systemd/system").mkdir(parents=True)
    for unit in (AGENT, COLLECTOR):
        shutil.copy(UNITS / unit, top / "etc/systemd/system" / unit)
    # ExecReload= names kill without a directory: systemd looks for it in /usr/bin.
    programs = ["opt/schoolgate/venv/bin/schoolgate-agent", "usr/bin/kill"]
    for name in [*programs, "opt/schoolgate/venv/bin/schoolgate-collector"]:
        stand_in = top / name
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    yield top


def verify(root: Path, unit: str) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit``: unknown or misspelt keys, values it
    cannot parse, programs that are missing. It exits 0 on most of these, so its words count."""
    result = subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = [line for line in result.stderr.splitlines() if unit in line]
    if result.returncode != 0:
        said.append(f"exit status {result.returncode}: {result.stderr.strip()}")
    return said


@pytest.mark.parametrize("unit", [AGENT, COLLECTOR])
def test_systemd_accepts_the_unit(root: Path, unit: str) -> None:
    assert verify(root, unit) == []


def test_verify_would_notice_a_misspelt_key(root: Path) -> None:
    text = (UNITS / AGENT).read_text(encoding="utf-8").replace("ProtectClock=", "ProtectClok=")
    (root / "etc/systemd/system/misspelt.service").write_text(text, encoding="utf-8")
    assert any("ProtectClok" in line for line in verify(root, "misspelt.service"))


def security(root: Path, unit: str, *options: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--root={root}", *options, unit],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot assess a unit offline (systemd 250 or later)")
    return result


def exposure(result: subprocess.CompletedProcess[str], unit: str) -> float:
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize(("unit", "limit"), EXPOSURE.items())
def test_exposure_is_within_the_documented_limit(root: Path, unit: str, limit: float) -> None:
    # The threshold is on systemd's internal scale, ten times the level it prints.
    result = security(root, unit, f"--threshold={round(limit * 10)}")
    measured = exposure(result, unit)
    print(f"{unit}: exposure {measured}")
    assert measured <= limit
    assert result.returncode == 0, result.stderr


def test_the_documented_drop_in_takes_the_capture_away(root: Path) -> None:
    doc = (UNITS.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- drop-in: schoolgate-agent, monitor off -->\n```ini\n(.*?)```", doc, re.DOTALL
    )
    assert found is not None
    unit = "monitor-off.service"
    shutil.copy(UNITS / AGENT, root / "etc/systemd/system" / unit)
    drop_ins = root / "etc/systemd/system" / f"{unit}.d"
    drop_ins.mkdir()
    (drop_ins / "override.conf").write_text(found.group(1), encoding="utf-8")
    assert verify(root, unit) == []
    checks = {c["json_field"]: c for c in json.loads(security(root, unit, "--json=short").stdout)}
    assert checks["RestrictAddressFamilies_AF_PACKET"]["set"] is True
    assert exposure(security(root, unit), unit) < exposure(security(root, AGENT), AGENT)


@pytest.mark.parametrize(
    ("unit", "program", "user"),
    [(AGENT, "agent", "schoolgate"), (COLLECTOR, "collector", "schoolgate-collector")],
)
def test_the_configuration_is_checked_before_the_start(unit: str, program: str, user: str) -> None:
    found = settings(unit)
    assert found["Type"] == ["notify"]
    assert found["NotifyAccess"] == ["main"]
    [start] = found["ExecStart"]
    [check] = found["ExecStartPre"]
    config = f"--config /etc/schoolgate/{program}.toml"
    assert start == f"{VENV_BIN}schoolgate-{program} run {config}"
    assert check == f"{VENV_BIN}schoolgate-{program} config check {config}"
    assert found["User"] == found["Group"] == [user]


def test_the_agent_unit_agrees_with_the_agent() -> None:
    found = settings(AGENT)
    # Its state directory is where the configuration keeps state unless told otherwise.
    assert Path("/var/lib", *found["StateDirectory"]) == Path(ServerSection().state_dir)
    # The agent raises its own file limit to this: given by the unit, it need not.
    assert found["LimitNOFILE"] == [str(agent_cli._FILE_LIMIT)]
    # Port 53 and the network monitor's capture, and nothing else.
    grants = {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    assert words(AGENT, "AmbientCapabilities") == words(AGENT, "CapabilityBoundingSet") == grants
    assert {"AF_PACKET", "AF_NETLINK"} <= words(AGENT, "RestrictAddressFamilies")
    # ProcSubset=pid would hide the ARP table; a user namespace would void the capabilities.
    assert ARP_TABLE.is_relative_to("/proc/net")
    assert "ProcSubset" not in found and "PrivateUsers" not in found
    assert found["ExecReload"] == ["kill -HUP $MAINPID"]
    assert "WatchdogSec" in found


def test_the_collector_unit_holds_no_capability() -> None:
    found = settings(COLLECTOR)
    assert found["CapabilityBoundingSet"] == found["AmbientCapabilities"] == [""]
    assert found["ProcSubset"] == ["pid"]
    assert words(COLLECTOR, "RestrictAddressFamilies") == {"AF_INET", "AF_INET6", "AF_UNIX"}


# --- config check ---------------------------------------------------------------------------


def unit_check_command(unit: str, config: Path) -> list[str]:
    """The unit's ExecStartPre= arguments, with a test configuration for the installed one."""
    [check] = settings(unit)["ExecStartPre"]
    args = shlex.split(check)[1:]
    args[args.index("--config") + 1] = str(config)
    return args


def test_agent_config_check_passes_the_bundled_default(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run_agent_command("config", "check", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "configuration OK: (bundled default config) (DNS on 127.0.0.1:5353, [::1]:5353;"
        f" state in {state})\n"
    )
    assert not state.exists()  # checked, not made: run makes it


def test_agent_config_check_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BROKEN, encoding="utf-8")
    result = run_agent_command(*unit_check_command(AGENT, path))
    assert result.returncode == agent_cli.EXIT_CONFIG
    assert result.stdout == ""
    assert (
        f"schoolgate-agent: configuration error: {path}:2: server.listen[0] = 'nonsense':"
        in result.stderr
    )


def test_agent_config_check_warns_of_a_missing_lease_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
        '[identity]\nlease_files = ["dnsmasq.leases"]\n',
        encoding="utf-8",
    )
    result = run_agent_command(*unit_check_command(AGENT, path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"configuration OK: {path} (DNS on 127.0.0.1:53, [::1]:53;")
    assert (
        f"schoolgate-agent: warning: {path}: identity.lease_files[0] ="
        f" '{tmp_path / 'dnsmasq.leases'}': no such file\n" in result.stderr
    )


def test_agent_config_check_refuses_a_state_dir_it_cannot_use(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    path = tmp_path / "agent.toml"
    path.write_text(f'[server]\nstate_dir = "{taken / "state"}"\n', encoding="utf-8")
    result = run_agent_command(*unit_check_command(AGENT, path))
    assert result.returncode == agent_cli.EXIT_CONFIG
    assert f"{path}: server.state_dir = '{taken / 'state'}': does not exist" in result.stderr


def test_collector_config_check_passes_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert collector_main(["config", "check"]) == 0
    database = tmp_path / "schoolgate-collector" / "collector.sqlite"
    assert capsys.readouterr().out == (
        f"configuration OK: (defaults) (API on 127.0.0.1:8480; database sqlite:///{database})\n"
    )
    assert not database.parent.exists()  # nothing opened, nothing made


def test_collector_config_check_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(BROKEN, encoding="utf-8")
    assert collector_main(unit_check_command(COLLECTOR, path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: {path}: " in captured.err and "server.listen" in captured.err
    path.write_text('[server]\nlisten = "nonsense"\n', encoding="utf-8")
    assert collector_main(unit_check_command(COLLECTOR, path)) == 2
    assert f"error: {path}: server.listen = 'nonsense': " in capsys.readouterr().err


def test_collector_config_check_refuses_a_state_dir_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    path = tmp_path / "collector.toml"
    path.write_text(f'[server]\nstate_dir = "{taken}"\n', encoding="utf-8")
    assert collector_main(unit_check_command(COLLECTOR, path)) == 2
    assert f"error: {path}: server.state_dir = '{taken}': not a directory" in (
        capsys.readouterr().err
    )
