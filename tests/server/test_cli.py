"""``schoolgate-collector`` as an IT provider runs it: set up, register a school, serve."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import CONTENT_TYPE, ShippedEvent, encode_batch
from schoolgate.server.cli import main
from tests.support.process import free_port
from tests.support.waiting import wait_for


def config(tmp_path: Path, database_url: str, port: int = 8480) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "{database_url}"\n',
        encoding="utf-8",
    )
    return path


def test_set_up_and_register_schools(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(config(tmp_path, database_url))
    assert main(["site", "add", "north", "--config", conf]) == 2
    assert "not set up: run 'schoolgate-collector init-db'" in capsys.readouterr().err
    assert main(["init-db", "--config", conf]) == 0
    assert "database ready at revision" in capsys.readouterr().out
    assert main(["init-db", "--config", conf]) == 2
    assert "already set up" in capsys.readouterr().err
    assert main(["migrate", "--config", conf]) == 0
    assert "at revision" in capsys.readouterr().out

    assert main(["site", "add", "North-Primary", "--config", conf]) == 0
    out = capsys.readouterr().out
    assert "site north-primary added" in out
    token = out.strip().splitlines()[-1]
    assert token.startswith("sgs_")
    assert main(["site", "add", "north-primary", "--config", conf]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["site", "add", "../etc", "--config", conf]) == 2
    assert "is not a site name" in capsys.readouterr().err

    assert main(["site", "list", "--config", conf]) == 0
    listed = capsys.readouterr().out
    assert "north-primary" in listed and "never" in listed
    assert token not in listed


def test_a_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[database]\nurl = "mysql://x/y"\n', encoding="utf-8")
    assert main(["init-db", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "database.url" in err and "mysql is not supported" in err
    path.write_text("[ingest]\nmax_batch_events = 0\n", encoding="utf-8")
    assert main(["init-db", "--config", str(path)]) == 2
    assert "max_batch_events" in capsys.readouterr().err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_run_serves_until_told_to_stop(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    conf = str(config(tmp_path, database_url, port))
    assert main(["init-db", "--config", conf]) == 0
    assert main(["site", "add", "north-primary", "--config", conf]) == 0
    token = _token(tmp_path, conf)
    log = (tmp_path / "collector.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "schoolgate.server.cli", "run", "--config", conf],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: _healthy(port), timeout=30), "the collector did not answer"
        batch = [ShippedEvent(seq=1, kind=EventKind.STATUS, time=time.time())]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/events",
            content=encode_batch(batch),
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": "north-primary:1",
                "Content-Type": CONTENT_TYPE,
                "Content-Encoding": "gzip",
            },
        )
        assert answer.status_code == 200 and answer.json()["inserted"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
    text = (tmp_path / "collector.log").read_text()
    # uvicorn stops gracefully and then ends the process with the signal it caught, which
    # systemd counts as a clean stop.
    assert code in (0, -signal.SIGTERM), text
    assert "Traceback" not in text
    assert f"collector {__import__('schoolgate').__version__} on http://127.0.0.1:{port}" in text


def _token(tmp_path: Path, conf: str) -> str:
    # A second site, to read its token from the command's output the way a person would.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schoolgate.server.cli",
            "site",
            "add",
            "north-two",
            "--config",
            conf,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
