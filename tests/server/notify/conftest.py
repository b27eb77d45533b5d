"""A real SMTP server with STARTTLS and AUTH, a webhook receiver, and a collector's notifier
configured to use them, on SQLite and PostgreSQL (the ``repo`` fixture's databases)."""

from __future__ import annotations

import time as clock
from collections.abc import Iterator, Sequence
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.notify import ledger
from schoolgate.server.notify.service import Notifier
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.settings import parse
from tests.support.certs import ScratchPKI, make_pki
from tests.support.smtp_server import PASSWORD, USER, SmtpServer
from tests.support.webhook_receiver import WebhookReceiver

ZONE = ZoneInfo("Europe/London")
SECRET = "a webhook secret of enough length"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ScratchPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), "localhost")


@pytest.fixture
def smtp(pki: ScratchPKI) -> Iterator[SmtpServer]:
    server = SmtpServer(pki.server_context()).start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver()
    yield made
    made.close()


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """The SMTP password and the webhook's secret, each in a file of its own."""
    (tmp_path / "smtp.password").write_text(PASSWORD + "\n", encoding="utf-8")
    (tmp_path / "webhook.secret").write_text(SECRET + "\n", encoding="utf-8")
    return tmp_path


def notify_toml(
    pki: ScratchPKI,
    smtp_port: int | None = None,
    webhook_url: str | None = None,
    *,
    cap: int = 10,
    recipients: str = "",
    interval: float = 30,
) -> str:
    """A ``[notify]`` section for the test servers (secrets beside the config)."""
    text = (
        "[admin]\n"
        'timezone = "Europe/London"\n'
        "[notify]\n"
        f"max_immediate_per_day = {cap}\n"
        f"interval_seconds = {interval}\n"
        'digest_at = "07:30"\n'
        'admin_url = "https://collector.district.example/"\n'
    )
    if smtp_port is not None:
        text += (
            "[notify.smtp]\n"
            'host = "127.0.0.1"\n'
            f"port = {smtp_port}\n"
            f'username = "{USER}"\n'
            'password_file = "smtp.password"\n'
            'sender = "schoolgate@district.example"\n'
            "timeout = 10\n"
            f'ca_file = "{pki.ca_file}"\n'
        )
    if webhook_url is not None:
        text += f'[notify.webhook]\nurl = "{webhook_url}"\nsecret_file = "webhook.secret"\n'
    if recipients:
        return text + recipients
    if smtp_port is not None:
        text += (
            '[[notify.recipients]]\nsites = ["north-primary"]\n'
            'email = ["lead@north.example"]\n'
            '[[notify.recipients]]\nsites = ["*"]\nemail = ["it@district.example"]\n'
        )
    if webhook_url is not None:
        text += '[[notify.recipients]]\nsites = ["*"]\nwebhook = true\n'
    return text


def notifier(
    repo: SqlRepository, secrets: Path, toml: str, metrics: CollectorMetrics | None = None
) -> Notifier:
    settings = parse(toml, "(test)", secrets)
    assert settings.notify is not None
    return Notifier(
        repo.engine, settings.notify, ZONE, 365 * 86_400.0, metrics or CollectorMetrics()
    )


def noon_after(when: float) -> float:
    """Noon of the next day in London: a time in the future, far from midnight and 07:30."""
    day = datetime.fromtimestamp(when, ZONE).date() + timedelta(days=1)
    return datetime.combine(day, time(12), ZONE).timestamp()


def started(made: Notifier, now: float) -> Notifier:
    """As if it had run before: new alerts from here on, the last digest just before ``now``."""
    with made.engine.begin() as conn:
        ledger.move_cursor(conn, ledger.INTAKE, clock.time() - 1)
        ledger.move_cursor(conn, ledger.DIGEST_MADE, now - 1)
    return made


def alert(seq: int, severity: str = "high", **fields: Any) -> ShippedEvent:
    values: dict[str, Any] = {
        "time": datetime(2026, 11, 20, 10, 3, 5, tzinfo=ZONE).timestamp() + seq,
        "client_ip": "10.20.2.7",
        "mac": "00:11:22:33:44:55",
        "hostname": "ks2-lab-07",
        "group": "ks2",
        "name": "selfharm.example",
        "qtype": "A",
        "action": "block+alert",
        "categories": ("self-harm",),
        "rule": "category",
        "data": {"reason": "category"},
    }
    values.update(fields)
    return ShippedEvent(seq=seq, kind=EventKind.ALERT, severity=Severity(severity), **values)


def send(repo: SqlRepository, site: SiteRef, events: Sequence[ShippedEvent]) -> None:
    """A batch from the school's agent, as ingest records it."""
    key = f"{site.name}:{events[0].seq}-{events[-1].seq}"
    repo.ingest(site, key, events, keep_after=0)
