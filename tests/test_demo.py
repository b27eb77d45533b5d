"""The README's first command as a new user meets it: ``./dev run``, then every command the
README gives, as written, from three devices; the lookups reach the collector and its API,
the metrics are scraped, and one Ctrl-C stops everything.

The only changes made to the README's commands are the ports (free ones, so that the test
never collides with anything), the state directory (``XDG_STATE_HOME``, in place of
``~/.local/state``) and the upstream (a resolver on loopback, as the machine has no internet).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.process import free_port, wait_until_answering
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def readme_commands() -> list[str]:
    """The commands of the README's ``sh`` blocks before its first ``##`` heading."""
    start = README.read_text(encoding="utf-8").split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", start, re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(("./dev ", "#"))]


@dataclass
class Demo:
    process: subprocess.Popen[str]
    log: Path
    state: Path
    dns_port: int
    api_port: int
    metrics_port: int
    upstream: FakeUpstream

    def said(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def as_here(self, command: str) -> str:
        """A README command with this test's ports and state directory."""
        return (
            command.replace("-p 5353", f"-p {self.dns_port}")
            .replace(":8480", f":{self.api_port}")
            .replace(":9717", f":{self.metrics_port}")
            .replace("~/.local/state", str(self.state))
        )

    def shell(self, command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", self.as_here(command)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done.stdout


@pytest.fixture
def demo(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Demo]:
    for tool in ("dig", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (./dev test installs it)")
    upstream.add("www.example.org", "A", "192.0.2.80")
    upstream.add("forcesafesearch.google.com", "A", "216.239.38.120")
    found = Demo(
        process=None,  # type: ignore[arg-type]  # started below
        log=tmp_path / "demo.log",
        state=tmp_path / "state",
        dns_port=free_port(),
        api_port=free_port(),
        metrics_port=free_port(),
        upstream=upstream,
    )
    command = [
        str(REPO / "dev"),
        "run",
        "--collector-listen",
        f"127.0.0.1:{found.api_port}",
        "--metrics",
        f"127.0.0.1:{found.metrics_port}",
        "--listen",
        f"127.0.0.1:{found.dns_port}",
        "--listen",
        f"[::1]:{found.dns_port}",
        "--upstream",
        upstream.url,
    ]
    with found.log.open("w", encoding="utf-8") as out:
        # A session of its own, like a terminal's foreground job: Ctrl-C reaches every process.
        found.process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "XDG_STATE_HOME": str(found.state), "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield found
    finally:
        if found.process.poll() is None:
            os.killpg(found.process.pid, signal.SIGKILL)
            found.process.wait(timeout=10)


def test_a_new_user_follows_the_readme(demo: Demo) -> None:
    wait_until_answering(demo.dns_port, demo.process, timeout=120)
    assert wait_for(lambda: "Ctrl-C stops both." in demo.said(), timeout=30), demo.said()
    banner = demo.said()
    password = re.search(r"user demo-admin, password (\S+)", banner)
    assert password is not None, banner
    assert f"dig @127.0.0.1 -p {demo.dns_port} dns.google" in banner
    assert f"http://127.0.0.1:{demo.metrics_port}/metrics (agent)" in banner

    # Every README command, as written; each dig checked against the comment beside it.
    commands = readme_commands()
    digs = [c for c in commands if c.startswith("dig ")]
    assert len(digs) >= 7
    for line in digs:
        command, _, claim = line.partition("#")
        said = demo.shell(command + " +tries=1 +time=5")
        assert "status: NOERROR" in said, line
        if "0.0.0.0" in claim:
            assert re.search(r"\sA\s+0\.0\.0\.0$", said, re.M), (line, said)
        if "EDE: 15" in claim:
            assert "EDE: 15 (Blocked)" in said, (line, said)
        if "no answer" in claim:
            assert "ANSWER: 0," in said, (line, said)
        if "blocked" in claim:
            assert "EDE: 15" in said, (line, said)
        if "forwarded" in claim or "device" in claim or "IPv6" in claim:
            assert "192.0.2.80" in said, (line, said)
        if "CNAME to" in claim:
            target = claim.split("CNAME to", 1)[1].strip()
            assert re.search(rf"\sCNAME\s+{re.escape(target)}\.$", said, re.M), (line, said)

    # The collector has them, with the device that asked.
    site_list = next(c for c in commands if "site list" in c)
    assert wait_for(
        lambda: re.search(r"demo-school\s+([1-9]\d*)", demo.shell(site_list)) is not None,
        timeout=30,
    )
    api = f"http://127.0.0.1:{demo.api_port}"
    signed_in = httpx.post(
        f"{api}/api/v1/sessions", json={"name": "demo-admin", "password": password.group(1)}
    )
    assert signed_in.status_code == 201, signed_in.text
    bearer = {"Authorization": f"Bearer {signed_in.json()['token']}"}

    def devices_seen() -> set[str]:
        params: dict[str, str | int] = {"name": "www.example.org", "limit": 500}
        events = httpx.get(f"{api}/api/v1/events", headers=bearer, params=params)
        return {event["client_ip"] for event in events.json()["events"]}

    assert wait_for(lambda: devices_seen() >= {"127.0.0.1", "127.0.0.2", "::1"}, timeout=30), (
        devices_seen()
    )
    # ... and so do its admin pages, for the demo admin.
    browser = Browser(api)
    try:
        overview = browser.follow(browser.sign_in("demo-admin", password.group(1)))
        assert overview.status_code == 200 and "demo-school" in overview.text
    finally:
        browser.close()

    # Prometheus's view: the README's scrape, and the collector's own.
    scrape = next(c for c in commands if c.startswith("curl "))
    blocked = re.findall(
        r'^schoolgate_dns_queries_total\{.*outcome="blocked".*\} (\S+)', demo.shell(scrape), re.M
    )
    assert sum(float(count) for count in blocked) >= 3  # one for each record type blocked
    collector_metrics = httpx.get(f"{api}/metrics").text
    assert "schoolgate_collector_sign_ins_total" in collector_metrics

    # The files the README points at are this user's alone.
    collector_dir = demo.state / "schoolgate-collector"
    for secret in ("demo-admin.password", "demo-school.token"):
        assert (collector_dir / secret).stat().st_mode & 0o077 == 0

    # One Ctrl-C, as a terminal sends it to the whole foreground job.
    os.killpg(demo.process.pid, signal.SIGINT)
    assert demo.process.wait(timeout=30) == 0, demo.said()
    assert "Traceback" not in demo.said()
    for port in (demo.dns_port, demo.api_port, demo.metrics_port):
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))


def test_the_readme_commands_are_the_ones_tested() -> None:
    commands = readme_commands()
    assert all(shlex.split(c, comments=True) for c in commands)
    assert {c.split()[0] for c in commands} == {"dig", ".venv/bin/schoolgate-collector", "curl"}
