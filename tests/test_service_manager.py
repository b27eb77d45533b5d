"""The notify protocol to systemd, against a real datagram socket standing in for it; and the
agent as a process, telling it when it is ready and when it stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.service_manager import ServiceManager
from tests.support.process import agent_command, free_port, wait_until_answering
from tests.support.upstream import FakeUpstream


@pytest.fixture
def manager_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd listens on for a Type=notify service."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        yield sock, path


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_outside_systemd_nothing_is_sent() -> None:
    manager = ServiceManager({})
    assert not manager.present and manager.watchdog_seconds is None
    assert not manager.ready("serving")


def test_messages_reach_the_socket(manager_socket: tuple[socket.socket, str]) -> None:
    sock, path = manager_socket
    manager = ServiceManager({"NOTIFY_SOCKET": path})
    assert manager.ready("serving on 127.0.0.1:53,\nwith a newline")
    assert received(sock) == ["READY=1", "STATUS=serving on 127.0.0.1:53, with a newline"]
    assert manager.stopping() and received(sock) == ["STOPPING=1"]
    assert manager.alive() and received(sock) == ["WATCHDOG=1"]


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"schoolgate-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert ServiceManager({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_a_socket_that_is_gone_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ServiceManager({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert manager.present
    assert not manager.ready() and not manager.alive()
    assert [r.getMessage() for r in caplog.records] == [
        "cannot tell the service manager READY=1: [Errno 2] No such file or directory"
    ]


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_the_watchdog_is_for_this_process(env: dict[str, str], seconds: float | None) -> None:
    assert ServiceManager(env).watchdog_seconds == seconds


def test_the_agent_is_ready_once_it_answers_and_says_when_it_stops(
    manager_socket: tuple[socket.socket, str], tmp_path: Path, upstream: FakeUpstream
) -> None:
    sock, path = manager_socket
    port = free_port()
    adult = tmp_path / "adult.txt"
    adult.write_text("adult.example\n", encoding="utf-8")
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    args = ("--listen", f"127.0.0.1:{port}", "--upstream", upstream.url)
    state = ("--state-dir", str(tmp_path / "state"), "--list", f"adult={adult}")
    with open(tmp_path / "agent.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(agent_command("run", *args, *state), stderr=log, text=True, env=env)
        try:
            ready = received(sock)
            assert ready[0] == "READY=1"
            assert ready[1].startswith(f"STATUS=serving on 127.0.0.1:{port}, ")
            wait_until_answering(port, proc)  # ready meant it: the first question is answered
            assert received(sock) == ["WATCHDOG=1"]  # every half of WatchdogSec
            proc.send_signal(signal.SIGTERM)
            while (message := received(sock)) == ["WATCHDOG=1"]:
                pass  # a keep-alive already on its way
            assert message == ["STOPPING=1"]
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
