"""``schoolgate-collector notify log|test``, and ``run`` sending an alert posted to its API."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from schoolgate.event_batch import CONTENT_TYPE, encode_batch
from schoolgate.server.cli import main
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import NotifyCursor
from schoolgate.server.repository import SqlRepository
from tests.support.certs import ScratchPKI
from tests.support.process import free_port
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

from .conftest import alert, notifier, notify_toml, send


def write_config(directory: Path, database_url: str, notify: str, port: int = 8480) -> str:
    path = directory / "collector.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{directory / "state"}"\n'
        f'[database]\nurl = "{database_url}"\n' + notify,
        encoding="utf-8",
    )
    return str(path)


def test_notify_test_sends_on_each_channel(
    repo: SqlRepository,
    database_url: str,
    smtp: SmtpServer,
    receiver: WebhookReceiver,
    pki: ScratchPKI,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo.add_site("north-primary")
    conf = write_config(secrets, database_url, notify_toml(pki, smtp.port, receiver.url))
    assert main(["notify", "test", "--site", "north-primary", "--config", conf]) == 0
    assert capsys.readouterr().out == (
        "email to it@district.example, lead@north.example: sent\nwebhook: sent\n"
    )
    (got,) = smtp.messages()
    assert got.message["Subject"] == "[schoolgate] north-primary: test message"
    (post,) = receiver.received()
    assert post.headers["X-Schoolgate-Delivery"] == "test"

    smtp.stop()
    assert main(["notify", "test", "--site", "north-primary", "--config", conf]) == 1
    assert "email to it@district.example, lead@north.example: failed: cannot connect" in (
        capsys.readouterr().out
    )
    assert main(["notify", "test", "--site", "south", "--config", conf]) == 1
    assert "there is no site 'south'" in capsys.readouterr().err
    with repo.engine.connect() as conn:
        assert conn.execute(select(NotifyCursor)).all() == []  # tests are not recorded


def test_notify_log_lists_the_messages(
    repo: SqlRepository,
    database_url: str,
    smtp: SmtpServer,
    pki: ScratchPKI,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = repo.add_site("north-primary")[0]
    conf = write_config(secrets, database_url, notify_toml(pki, smtp.port))
    assert main(["notify", "log", "--config", conf]) == 0
    assert capsys.readouterr().out == "no notification messages yet\n"
    made = notifier(repo, secrets, notify_toml(pki, smtp.port))
    made.run()
    smtp.stop()
    send(repo, site, [alert(1)])
    made.run()
    assert main(["notify", "log", "--site", "north-primary", "--config", conf]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "made", "site", "channel", "kind", "alerts", "outcome", "tries", "to,", "or", "the",
        "last", "error",
    ]  # fmt: skip
    assert row.split()[2:8] == ["north-primary", "email", "immediate", "1", "retrying", "1"]
    assert "it@district.example, lead@north.example: cannot connect to 127.0.0.1" in row
    assert "(next try " in row


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_running_collector_sends_an_alert_it_receives(
    database_url: str,
    smtp: SmtpServer,
    pki: ScratchPKI,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    notify = notify_toml(pki, smtp.port, interval=1)
    conf = write_config(secrets, database_url, notify, port)
    assert main(["init-db", "--config", conf]) == 0
    assert main(["site", "add", "north-primary", "--config", conf]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    log = (secrets / "collector.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "schoolgate.server.cli", "run", "--config", conf],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = open_engine(database_url)
    try:
        # Alerts count from the notifier's first run, which comes as the collector starts.
        assert wait_for(lambda: _started(engine), timeout=30), "no notifier ran"
        assert wait_for(lambda: _healthy(port), timeout=30), "the collector did not answer"
        batch = encode_batch([alert(1, "critical", name="csam.example", categories=("csam",))])
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/events",
            content=batch,
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": "north-primary:1",
                "Content-Type": CONTENT_TYPE,
                "Content-Encoding": "gzip",
            },
        )
        assert answer.status_code == 200, answer.text
        assert wait_for(smtp.messages, timeout=30), "no email came"
    finally:
        engine.dispose()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
    text = (secrets / "collector.log").read_text()
    assert code in (0, -signal.SIGTERM), text
    assert "Traceback" not in text
    assert f"notifications: email via 127.0.0.1:{smtp.port} (starttls) to 2 addresses" in text
    (got,) = smtp.messages()
    assert got.message["Subject"] == "[schoolgate] north-primary: critical alert, csam"


def _started(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(NotifyCursor.name)).first() is not None


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
