"""``./dev run``'s demo as a real process: the agent answers, its events reach the collector,
and Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import pytest
from sqlalchemy import create_engine, func, select

from schoolgate.server.db.schema import Event, Site
from tests.support.browser import Browser
from tests.support.process import free_port, wait_until_answering
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for


def collector_events(database: Path) -> int:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Event)).scalar_one())
    finally:
        engine.dispose()


def test_the_demo_runs_the_agent_and_collector_and_stops_both(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    dns_port, api_port = free_port(), free_port()
    log = tmp_path / "demo.log"
    with open(log, "w", encoding="utf-8") as err:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "schoolgate.demo",
                "--state-dir",
                str(tmp_path / "state"),
                "--collector-listen",
                f"127.0.0.1:{api_port}",
                "--listen",
                f"127.0.0.1:{dns_port}",
                "--upstream",
                upstream.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until_answering(dns_port, demo, timeout=60)
        for name in ("www.example.org", "dns.google", "maths.example"):
            query = dns.message.make_query(name, "A")
            dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=3)
        database = tmp_path / "state" / "collector" / "collector.sqlite"
        token = (tmp_path / "state" / "collector" / "demo-school.token").read_text()
        assert token.startswith("sgs_")
        assert (tmp_path / "state" / "collector" / "demo-school.token").stat().st_mode & 0o077 == 0
        # Three lookups and the startup probe, shipped within a few seconds.
        assert wait_for(lambda: collector_events(database) >= 4, timeout=30), log.read_text()
        engine = create_engine(f"sqlite:///{database}")
        with engine.connect() as conn:
            assert conn.execute(select(Site.name)).scalars().all() == ["demo-school"]
        engine.dispose()
        # The demo admin signs in to the pages and sees the demo school reporting.
        password_file = tmp_path / "state" / "collector" / "demo-admin.password"
        assert password_file.stat().st_mode & 0o077 == 0
        browser = Browser(f"http://127.0.0.1:{api_port}")
        try:
            signed = browser.sign_in("demo-admin", password_file.read_text().strip())
            assert signed.status_code == 303, signed.text
            overview = browser.follow(signed)
            assert overview.status_code == 200 and "demo-school" in overview.text
        finally:
            browser.close()
        assert "admin pages on http://127.0.0.1:" in log.read_text()
    finally:
        demo.send_signal(signal.SIGINT)
        status = demo.wait(timeout=30)
    assert status == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    # Both children are gone: nothing listens on either port any more.
    for port in (dns_port, api_port):
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))
