"""``schoolgate-agent`` as a process: run, reload, stop, check, compile, and dig as a client."""

from __future__ import annotations

import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.support.process import agent_command, free_port, run_agent_command, running_agent
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_agent_command(*args, "--state-dir", str(state))


def quick_start(port: int, upstream: FakeUpstream, adult: Path, state: Path) -> tuple[str, ...]:
    """The quick-start flags of the README, for a run with no configuration file."""
    return (
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream.url,
        "--list",
        f"adult={adult}",
        "--state-dir",
        str(state),
    )


def a_record(port: int, name: str) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def test_run_reload_and_stop(tmp_path: Path, upstream: FakeUpstream) -> None:
    adult = tmp_path / "adult.txt"
    adult.write_text("first.example\n", encoding="utf-8")
    port = free_port()
    log = tmp_path / "agent.log"
    args = quick_start(port, upstream, adult, tmp_path / "state")
    with running_agent(*args, port=port, log=log) as proc:
        assert a_record(port, "www.first.example") == ["0.0.0.0"]
        assert a_record(port, "second.example") == ["192.0.2.1"]

        # SIGHUP picks up a changed list ...
        adult.write_text("first.example\nsecond.example\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: a_record(port, "x.second.example") == ["0.0.0.0"])

        # ... and a list that cannot be compiled leaves the running build in service.
        adult.unlink()
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload refused" in log.read_text(encoding="utf-8"))
        assert a_record(port, "x.second.example") == ["0.0.0.0"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "stopped" in log.read_text(encoding="utf-8")


def test_start_with_compiled_lists_skips_the_compile(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    adult = tmp_path / "adult.txt"
    adult.write_text("first.example\n", encoding="utf-8")
    state = tmp_path / "state"
    assert cli("lists", "compile", "--list", f"adult={adult}", state=state).returncode == 0
    port = free_port()
    log = tmp_path / "agent.log"
    args = quick_start(port, upstream, adult, state)
    with running_agent(*args, port=port, log=log) as proc:
        assert a_record(port, "first.example") == ["0.0.0.0"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "compiled" not in log.read_text(encoding="utf-8")


def test_check_explains_a_block(tmp_path: Path) -> None:
    adult = tmp_path / "adult.txt"
    adult.write_text("example.com\n", encoding="utf-8")
    result = cli("check", "WWW.Example.COM.", "--list", f"adult={adult}", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert "decision: block" in result.stdout
    assert "category: adult" in result.stdout
    assert "entry:    example.com" in result.stdout
    assert f"({adult})" in result.stdout


def test_check_explains_an_allow_and_an_outsider(tmp_path: Path) -> None:
    state = tmp_path / "s"
    allowed = cli("check", "www.example.org", state=state)
    assert "decision: allow" in allowed.stdout
    outsider = cli("check", "www.example.org", "--client", "203.0.113.9", state=state)
    assert "refused" in outsider.stdout


def test_check_uses_the_bundled_lists(tmp_path: Path) -> None:
    result = cli("check", "dns.google", "--type", "HTTPS", state=tmp_path / "s")
    assert "decision: block" in result.stdout
    assert "category: encrypted-dns" in result.stdout


def test_lists_compile_reports_counts(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("0.0.0.0 a.example b.example\n1.2.3.4 real.example\nnot a line\n", "utf-8")
    result = cli("lists", "compile", "--list", f"ads={hosts}", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert f"ads:{hosts} (ads, hosts): 2 entries, 1 invalid, 1 unsupported" in result.stdout
    assert "bytes/name" in result.stdout
    assert (tmp_path / "s" / "lists" / "current.sgl").is_file()


def test_config_errors_name_file_key_value_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[cache]\nsize = "big"\n', encoding="utf-8")
    result = subprocess.run(
        agent_command("check", "--config", str(config), "example.org"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config}:2: cache.size = 'big': expected int, got str" in result.stderr


def test_bad_flag_values_are_refused(tmp_path: Path) -> None:
    result = cli("run", "--listen", "localhost:53", state=tmp_path)
    assert result.returncode == 2
    assert "not an IP address" in result.stderr
    result = cli("run", "--upstream", "https://dns.example/dns-query", state=tmp_path)
    assert result.returncode == 2
    assert "unknown scheme" in result.stderr


def test_a_missing_list_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    result = cli(
        "run",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--list",
        f"adult={missing}",
        state=tmp_path / "s",
    )
    assert result.returncode == 2
    assert f"lists[0].path = '{missing}': no such file" in result.stderr


@pytest.mark.skipif(
    shutil.which("dig") is None, reason="dig is not installed (./dev test installs it)"
)
def test_dig_as_a_client(tmp_path: Path, upstream: FakeUpstream) -> None:
    adult = tmp_path / "adult.txt"
    adult.write_text("blocked.example\n", encoding="utf-8")
    port = free_port()
    args = quick_start(port, upstream, adult, tmp_path / "state")
    with running_agent(*args, port=port, log=tmp_path / "agent.log"):

        def dig(*extra: str) -> str:
            out = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3", *extra],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return out.stdout

        blocked = dig("www.blocked.example", "A")
        assert "status: NOERROR" in blocked
        assert "0.0.0.0" in blocked
        assert "EDE: 15 (Blocked): (blocked by school policy: adult)" in blocked
        https = dig("www.blocked.example", "HTTPS", "+tcp")
        assert "ANSWER: 0" in https
        assert "EDE: 15" in https
        allowed = dig("www.example.org", "A")
        assert "192.0.2.1" in allowed
        # dig sends a DNS cookie by default: an OPT with options is a normal query.
        assert "status: NOERROR" in allowed


def test_check_never_changes_the_state_directory(tmp_path: Path) -> None:
    adult = tmp_path / "adult.txt"
    adult.write_text("example.com\n", encoding="utf-8")
    state = tmp_path / "state"
    result = cli("check", "example.com", "--list", f"adult={adult}", state=state)
    assert "decision: block" in result.stdout
    assert "compiled for this check" in result.stdout
    assert not state.exists()


def test_check_names_the_answer_each_record_type_gets(tmp_path: Path) -> None:
    state = tmp_path / "s"
    assert "answer:   0.0.0.0 (TTL 60 s)" in cli("check", "dns.google", state=state).stdout
    aaaa = cli("check", "dns.google", "--type", "AAAA", state=state).stdout
    assert "answer:   :: (TTL 60 s)" in aaaa
    https = cli("check", "dns.google", "--type", "HTTPS", state=state).stdout
    assert "answer:   NODATA" in https


def test_check_names_the_category_on_a_fresh_install(tmp_path: Path) -> None:
    result = cli("check", "chatgpt.com", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert "category: genai (Generative AI tools, tier productivity)" in result.stdout
    assert "decision: block" in result.stdout  # the bundled config's secondary pupils
    assert "list:     schoolgate-genai" in result.stdout


def test_check_shows_an_allowed_category_and_an_alert(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    selfharm = tmp_path / "sh.txt"
    selfharm.write_text("sh.example\n", encoding="utf-8")
    config.write_text(
        '[policy]\nage_tier = "staff"\n[[lists]]\nname = "sh"\ncategory = "self-harm"\n'
        f'path = "{selfharm}"\n',
        encoding="utf-8",
    )
    games = cli("check", "roblox.com", "--config", str(config), state=tmp_path / "s")
    assert "decision: allow" in games.stdout
    assert "category: games" in games.stdout
    alert = cli("check", "x.sh.example", "--config", str(config), state=tmp_path / "s")
    assert "decision: alert" in alert.stdout
    assert "alert:    raised for the safeguarding lead" in alert.stdout


def test_a_locked_category_cannot_be_allowed(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[policy]\nactions = { terrorism = "allow" }\n', encoding="utf-8")
    result = cli("check", "example.org", "--config", str(config), state=tmp_path / "s")
    assert result.returncode == 2
    assert "policy.actions.terrorism = 'allow'" in result.stderr
    assert "locked category" in result.stderr


def test_categories_lists_the_taxonomy_in_each_language(tmp_path: Path) -> None:
    english = cli("categories", state=tmp_path / "s")
    assert english.returncode == 0, english.stderr
    header, *rows = english.stdout.splitlines()
    assert header.split()[:3] == ["CATEGORY", "TIER", "ACTION"]
    genai = next(r for r in rows if r.startswith("genai "))
    assert genai.split()[:3] == ["genai", "productivity", "block"]
    assert genai.endswith("Generative AI tools")
    vietnamese = cli("categories", "--language", "vi", state=tmp_path / "s")
    assert "Công cụ AI tạo sinh" in vietnamese.stdout
    chinese = cli("categories", "--language", "zh", state=tmp_path / "s")
    assert "生成式人工智能工具" in chinese.stdout


def test_lists_sources_shows_licences_and_attribution(tmp_path: Path) -> None:
    result = cli("lists", "sources", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    ut1 = next(line for line in result.stdout.splitlines() if line.startswith("ut1-malware "))
    assert "CC-BY-SA-4.0" in ut1 and ut1.split()[-2:] == ["yes", "yes"]
    assert "Attribution for the sources in use:" in result.stdout
    assert "Université Toulouse Capitole" in result.stdout


def test_check_shows_the_clients_group_and_device(tmp_path: Path) -> None:
    leases = tmp_path / "dhcpd.leases"
    leases.write_text(
        "lease 10.20.7.7 {\n  binding state active;\n  hardware ethernet aa:bb:cc:00:07:07;\n"
        '  client-hostname "ks2-lab-7";\n}\n',
        encoding="utf-8",
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        '[[groups]]\nname = "ks2"\nage_tier = "ks2"\nhostnames = ["ks2-*"]\n'
        '[[groups]]\nname = "staff"\nage_tier = "staff"\naddresses = ["10.20.9.0/24"]\n'
        '[[groups]]\nname = "guests"\nage_tier = "guest"\ndefault = true\n'
        f'[identity]\nneighbours = false\nlease_files = ["{leases}"]\n',
        encoding="utf-8",
    )
    pupil = cli(
        "check",
        "roblox.com",
        "--client",
        "10.20.7.7",
        "--config",
        str(config),
        state=tmp_path / "s",
    )
    assert "client:   10.20.7.7 (group ks2, age tier ks2)" in pupil.stdout
    assert "device:   MAC aa:bb:cc:00:07:07, DHCP name ks2-lab-7" in pupil.stdout
    assert "decision: block" in pupil.stdout
    teacher = cli(
        "check",
        "roblox.com",
        "--client",
        "10.20.9.3",
        "--config",
        str(config),
        state=tmp_path / "s",
    )
    assert "(group staff, age tier staff)" in teacher.stdout
    assert "decision: allow" in teacher.stdout
    visitor = cli(
        "check",
        "roblox.com",
        "--client",
        "10.20.50.1",
        "--config",
        str(config),
        state=tmp_path / "s",
    )
    assert "(group guests, age tier guest)" in visitor.stdout


def test_check_at_another_moment(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[site]\ntimezone = "Europe/London"\n'
        '[[schedules]]\nname = "club"\ndays = ["wed"]\ntimes = ["15:30-16:30"]\n'
        '[[groups]]\nname = "ks2"\nage_tier = "ks2"\naddresses = ["127.0.0.0/8"]\n'
        'schedules = { club = { games = "allow" } }\n'
        '[[groups]]\nname = "guests"\nage_tier = "guest"\ndefault = true\n'
        "[identity]\nneighbours = false\n",
        encoding="utf-8",
    )

    def check(moment: str) -> str:
        args = ("check", "roblox.com", "--config", str(config), "--at", moment)
        return cli(*args, state=tmp_path / "s").stdout

    in_club = check("2026-11-25 15:45")
    assert "time:     2026-11-25 15:45 (schedules on: club)" in in_club
    assert "decision: allow" in in_club
    after = check("2026-11-25 16:30")
    assert "(schedules on: none)" in after and "decision: block" in after


def test_check_at_another_moment_applies_the_exceptions_of_that_moment(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[site]\ntimezone = "Europe/London"\n'
        '[[groups]]\nname = "ks2"\nage_tier = "ks2"\naddresses = ["127.0.0.0/8"]\n'
        '[[groups]]\nname = "guests"\nage_tier = "guest"\ndefault = true\n'
        "[identity]\nneighbours = false\n",
        encoding="utf-8",
    )
    granted = calendar.timegm((2026, 11, 26, 9, 0, 0))  # 09:00 in London is 09:00 UTC then
    exceptions = tmp_path / "s" / "policy" / "exceptions.json"
    exceptions.parent.mkdir(parents=True)
    entry = {
        "id": "e1",
        "name": "roblox.com",
        "group": "ks2",
        "action": "allow",
        "expires": granted + 3600,
        "reason": "club",
        "created": granted,
        "by": "it",
    }
    exceptions.write_text(json.dumps({"exceptions": [entry]}), encoding="utf-8")

    def decision(moment: str) -> str:
        args = ("check", "roblox.com", "--config", str(config), "--at", moment)
        out = cli(*args, state=tmp_path / "s").stdout
        return next(line for line in out.splitlines() if line.startswith("decision:"))

    assert decision("2026-11-26 08:59") == "decision: block"  # not granted yet
    assert decision("2026-11-26 09:30") == "decision: allow"
    assert decision("2026-11-26 10:01") == "decision: block"  # expired


def test_check_shows_where_safe_search_leads(tmp_path: Path) -> None:
    out = cli("check", "www.youtube.com", state=tmp_path / "s").stdout
    assert "answer:   CNAME restrictmoderate.youtube.com. and its own records" in out
    assert "reason:   safe search: YouTube Restricted Mode (moderate)" in out


def test_run_takes_the_hard_limit_on_open_files() -> None:
    code = (
        "import resource\n"
        "from schoolgate.agent import cli\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "cli._raise_file_limit()\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "want = cli._FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, cli._FILE_LIMIT)\n"
        "print(soft == max(want, min(256, hard)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"


def test_output_cut_short_by_its_reader_is_not_an_error(tmp_path: Path) -> None:
    # As in `schoolgate-agent policy show | head -3`: the reader is gone (here, before the
    # first line, so the outcome does not depend on how much fits in the pipe).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            agent_command("policy", "show", "--state-dir", str(tmp_path)),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in done.stderr
