"""The notifier against a real SMTP server and a webhook receiver, on SQLite and PostgreSQL:
what goes at once and what waits, the daily cap, the digest, a server that is down, hostile
names. Times are given to ``run``; the alerts arrive (``received``) at the real time."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from schoolgate import __version__
from schoolgate.server.db.schema import NotifyAlert, NotifyMessage
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.notify import ledger
from schoolgate.server.notify.service import Notifier, backoff
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.reviews import Reviews
from tests.support.certs import ScratchPKI
from tests.support.smtp_server import SmtpServer
from tests.support.webhook_receiver import Post, WebhookReceiver

from .conftest import SECRET, ZONE, alert, noon_after, notifier, notify_toml, send, started

FOOTER = (
    "-- \n"
    f"schoolgate-collector {__version__}. Names in this message come from the school's "
    "network and are shown as plain text, with hidden characters escaped.\n"
)


@pytest.fixture
def site(repo: SqlRepository) -> SiteRef:
    return repo.add_site("north-primary")[0]


def sample(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"schoolgate_collector_{name}", labels) or 0.0


def messages(repo: SqlRepository) -> list[NotifyMessage]:
    with Session(repo.engine) as session:
        return list(session.scalars(select(NotifyMessage).order_by(NotifyMessage.id)))


def signed(post: Post) -> dict[str, object]:
    """The post's JSON, its signature checked the way docs/notifications.md says."""
    timestamp = post.headers["X-Schoolgate-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + post.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(post.headers["X-Schoolgate-Signature"], f"sha256={expected}")
    assert post.headers["Content-Type"] == "application/json"
    body: dict[str, object] = json.loads(post.body)
    return body


def test_a_high_alert_goes_at_once_by_email_and_webhook(
    repo: SqlRepository,
    site: SiteRef,
    smtp: SmtpServer,
    receiver: WebhookReceiver,
    pki: ScratchPKI,
    secrets: Path,
) -> None:
    metrics = CollectorMetrics()
    made = notifier(repo, secrets, notify_toml(pki, smtp.port, receiver.url), metrics)
    now = noon_after(time.time())
    started(made, now)
    send(repo, site, [alert(1)])
    made.run(now)

    (got,) = smtp.messages()
    assert got.rcpt_tos == ["it@district.example", "lead@north.example"]
    mail = got.message
    assert mail["Subject"] == "[schoolgate] north-primary: high alert, self-harm"
    assert mail["To"] == "it@district.example, lead@north.example"
    assert mail.get_content() == (
        "1 alert at north-primary.\n"
        "\n"
        "HIGH: self-harm\n"
        "  Time:       2026-11-20 10:03:06 GMT\n"
        "  Looked up:  selfharm.example (A)\n"
        "  Device:     ks2-lab-07, 10.20.2.7, 00:11:22:33:44:55\n"
        "  Group:      ks2\n"
        "  Filter:     block+alert\n"
        "  Reason:     a lookup in a category that raises alerts\n"
        "\n"
        "Alert inbox: https://collector.district.example/alerts?site=north-primary\n"
        "\n" + FOOTER
    )

    (post,) = receiver.received()
    body = signed(post)
    assert post.path == "/hooks/schoolgate"
    assert post.headers["X-Schoolgate-Delivery"] == str(body["id"])
    assert {k: v for k, v in body.items() if k not in ("id", "sent")} == {
        "schoolgate": 1,
        "kind": "immediate",
        "site": "north-primary",
        "link": "https://collector.district.example/alerts?site=north-primary",
        "count": 1,
        "held_back": 0,
        "acknowledged": 0,
        "last_immediate": False,
        "alerts": [
            {
                "seq": 1,
                "time": alert(1).time,
                "utc": "2026-11-20T10:03:06+00:00",
                "local": "2026-11-20T10:03:06+00:00",
                "severity": "high",
                "category": "self-harm",
                "reason": "category",
                "name": "selfharm.example",
                "qtype": "A",
                "action": "block+alert",
                "rule": "category",
                "client_ip": "10.20.2.7",
                "mac": "00:11:22:33:44:55",
                "hostname": "ks2-lab-07",
                "group": "ks2",
            }
        ],
    }

    sent = messages(repo)
    assert [(m.channel, m.kind, m.outcome, m.alerts, m.attempts) for m in sent] == [
        ("email", "immediate", "sent", 1, 1),
        ("webhook", "immediate", "sent", 1, 1),
    ]
    assert sent[0].recipients == "it@district.example, lead@north.example"
    assert sent[1].recipients == f"127.0.0.1:{receiver.port}"  # the host, never the path
    assert all(m.sent == now and m.next_attempt is None and m.error == "" for m in sent)
    for channel in ("email", "webhook"):
        labels = {"channel": channel, "kind": "immediate"}
        assert sample(metrics, "notify_messages_total", outcome="sent", **labels) == 1
        assert sample(metrics, "notify_alerts_total", **labels) == 1
        assert sample(metrics, "notify_pending_messages", channel=channel) == 0

    # Nothing is sent twice: not on the next run, nor by a collector started again.
    made.run(now + 60)
    notifier(repo, secrets, notify_toml(pki, smtp.port, receiver.url)).run(now + 120)
    assert len(smtp.messages()) == 1 and len(receiver.received()) == 1


def test_alerts_from_before_notifications_were_set_up_are_not_sent(
    repo: SqlRepository, site: SiteRef, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    send(repo, site, [alert(1)])
    made = notifier(repo, secrets, notify_toml(pki, smtp.port))
    made.run()  # the first run ever: it starts from now
    send(repo, site, [alert(2, "critical")])
    made.run()
    (got,) = smtp.messages()
    assert got.message["Subject"] == "[schoolgate] north-primary: critical alert, self-harm"


def test_the_rest_waits_for_the_digest_which_leaves_out_acknowledged_alerts(
    repo: SqlRepository, site: SiteRef, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    made = notifier(repo, secrets, notify_toml(pki, smtp.port))
    now = noon_after(time.time())
    started(made, now)
    send(repo, site, [alert(1, "medium"), alert(2, "critical"), alert(3, "low"), alert(4, "info")])
    made.run(now)
    (immediate,) = smtp.messages()
    assert immediate.message["Subject"] == "[schoolgate] north-primary: critical alert, self-harm"

    # Somebody deals with the low one in the admin pages before the digest.
    Reviews(repo.engine).acknowledge(site.id, 3, alert(3).time, "no-concern", "checked", "lead")
    made.run(now + 3_600)  # the afternoon: no digest yet
    assert len(smtp.messages()) == 1

    # A collector that was down at 07:30 makes the digest when it is back, once.
    later = made.digest_time(now + 86_400) + 3 * 3_600
    made.run(later)
    made.run(later + 60)
    made.run(made.digest_time(later + 86_400) + 1)  # the day after: nothing new
    _, digest = smtp.messages()
    assert digest.message["Subject"] == "[schoolgate] north-primary: daily digest, 2 alerts"
    text = digest.message.get_content()
    assert text.startswith(
        "Daily digest for north-primary: 2 alerts not sent at once, "
        "from 2026-11-20 10:03:06 GMT to 2026-11-20 10:03:09 GMT.\n"
        "1 more alert was acknowledged in the admin pages before this digest, and is not "
        "listed.\n"
        "\n"
        "MEDIUM: self-harm\n"
    )
    assert "\nINFO: self-harm\n" in text
    assert "LOW" not in text and "CRITICAL" not in text
    kinds = [(m.kind, m.alerts, m.acknowledged, m.outcome) for m in messages(repo)]
    assert kinds == [("immediate", 1, 0, "sent"), ("digest", 2, 1, "sent")]


def test_the_daily_cap_holds_alerts_for_the_digest_across_a_restart(
    repo: SqlRepository, site: SiteRef, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    metrics = CollectorMetrics()
    toml = notify_toml(
        pki,
        smtp.port,
        cap=2,
        recipients='[[notify.recipients]]\nsites = ["*"]\nemail = ["lead@north.example"]\n',
    )
    made = notifier(repo, secrets, toml, metrics)
    now = noon_after(time.time())
    started(made, now)
    send(repo, site, [alert(1), alert(2)])
    made.run(now)
    send(repo, site, [alert(3)])
    made.run(now + 60)
    send(repo, site, [alert(4), alert(5, "critical")])
    made.run(now + 120)
    # The collector restarts: the cap is counted from the database, not from memory.
    made = notifier(repo, secrets, toml, metrics)
    send(repo, site, [alert(6)])
    made.run(now + 180)

    first, second = smtp.messages()
    assert first.message["Subject"] == "[schoolgate] north-primary: 2 alerts, the most severe high"
    assert "last immediate" not in first.message.get_content()
    assert second.message.get_content().endswith(
        "This is the last immediate message for north-primary today (at most 2 a day): "
        "later alerts today wait for the daily digest at 07:30.\n\n" + FOOTER
    )
    assert sample(metrics, "notify_alerts_held_total", channel="email") == 3

    made.run(made.digest_time(now + 86_400))
    _, _, digest = smtp.messages()
    text = digest.message.get_content()
    assert text.startswith(
        "Daily digest for north-primary: 3 alerts not sent at once, "
        "from 2026-11-20 10:03:09 GMT to 2026-11-20 10:03:11 GMT.\n"
        "3 alerts were held back from immediate messages by the daily limit of 2 per school.\n"
        "\nCRITICAL: self-harm\n"
    )
    # A new day: immediate messages again.
    send(repo, site, [alert(7)])
    made.run(made.digest_time(now + 86_400) + 60)
    assert len(smtp.messages()) == 4


def test_a_dead_mail_server_gets_the_alerts_later_once(
    repo: SqlRepository, site: SiteRef, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    metrics = CollectorMetrics()
    made = notifier(repo, secrets, notify_toml(pki, smtp.port), metrics)
    now = noon_after(time.time())
    started(made, now)
    smtp.stop()
    send(repo, site, [alert(1)])
    made.run(now)
    send(repo, site, [alert(2, "critical")])
    made.run(now + 10)  # the first message waits for its backoff; the second fails at once

    first, second = messages(repo)
    assert (first.outcome, first.attempts, first.next_attempt) == ("retrying", 1, now + 30)
    assert (second.outcome, second.attempts) == ("retrying", 1)
    assert first.error.startswith(f"cannot connect to 127.0.0.1:{smtp.port}")
    labels = {"channel": "email", "kind": "immediate"}
    assert sample(metrics, "notify_messages_total", outcome="failed", **labels) == 2
    assert sample(metrics, "notify_pending_messages", channel="email") == 2

    made.run(now + 29)  # before either is due: nothing tried
    assert messages(repo)[0].attempts == 1
    made.run(now + 31)  # the first is due, and fails again: its backoff doubles
    first = messages(repo)[0]
    assert (first.attempts, first.next_attempt) == (2, now + 31 + backoff(2))

    smtp.start()  # the server is back, on the same port
    made.run(now + 31 + backoff(2))
    made.run(now + 3_600)
    subjects = sorted(m.message["Subject"] for m in smtp.messages())
    assert subjects == [
        "[schoolgate] north-primary: critical alert, self-harm",
        "[schoolgate] north-primary: high alert, self-harm",
    ]
    assert [(m.outcome, m.error) for m in messages(repo)] == [("sent", ""), ("sent", "")]
    assert sample(metrics, "notify_pending_messages", channel="email") == 0


def test_a_failing_webhook_is_tried_again_with_the_same_delivery_id(
    repo: SqlRepository, site: SiteRef, receiver: WebhookReceiver, pki: ScratchPKI, secrets: Path
) -> None:
    made = notifier(repo, secrets, notify_toml(pki, webhook_url=receiver.url))
    now = noon_after(time.time())
    started(made, now)
    receiver.answers.extend([503, 500])
    send(repo, site, [alert(1)])
    made.run(now)
    made.run(now + backoff(1))
    (message,) = messages(repo)
    assert (message.outcome, message.error) == (
        "retrying",
        "answered HTTP 500 Internal Server Error",
    )
    made.run(now + backoff(1) + backoff(2))
    posts = receiver.received()
    assert len(posts) == 3
    assert {p.headers["X-Schoolgate-Delivery"] for p in posts} == {str(message.id)}
    assert [signed(p)["count"] for p in posts] == [1, 1, 1]
    assert messages(repo)[0].outcome == "sent"


def test_hostile_names_stay_plain_text_and_never_break_a_header(
    repo: SqlRepository,
    site: SiteRef,
    smtp: SmtpServer,
    receiver: WebhookReceiver,
    pki: ScratchPKI,
    secrets: Path,
) -> None:
    made = notifier(repo, secrets, notify_toml(pki, smtp.port, receiver.url))
    now = noon_after(time.time())
    started(made, now)
    hostile = alert(
        1,
        name="<img src=x onerror=alert(1)>.example",
        hostname="lab\r\nBcc: victim@evil.example",
        categories=("self-harm\r\nX-Injected: yes",),
        group="ks2\u202eexe.txt",
        data={"reason": "category\n\nforged"},
    )
    send(repo, site, [hostile])
    made.run(now)

    (got,) = smtp.messages()
    assert got.rcpt_tos == ["it@district.example", "lead@north.example"]
    mail = got.message
    assert mail["Bcc"] is None and mail["X-Injected"] is None
    lines = got.data.split(b"\r\n")
    assert not any(line.startswith((b"Bcc", b"X-Injected")) for line in lines)
    # A long subject is folded onto a continuation line; unfolded, its leading space goes.
    assert mail["Subject"].strip() == (
        "[schoolgate] north-primary: high alert, self-harm\\x0d\\x0aX-Injected: yes"
    )
    assert mail.get_content_type() == "text/plain"
    text = mail.get_content()
    assert "HIGH: self-harm\\x0d\\x0aX-Injected: yes\n" in text
    assert "  Looked up:  <img src=x onerror=alert(1)>.example (A)\n" in text
    assert "  Device:     lab\\x0d\\x0aBcc: victim@evil.example, 10.20.2.7," in text
    assert "  Group:      ks2\\u202eexe.txt\n" in text
    assert "  Reason:     category\\x0a\\x0aforged\n" in text
    assert "\r" not in text and "\u202e" not in text

    # The webhook gives the values as they are, as JSON strings.
    (post,) = receiver.received()
    alerts = signed(post)["alerts"]
    assert isinstance(alerts, list)
    assert alerts[0]["name"] == "<img src=x onerror=alert(1)>.example"
    assert alerts[0]["hostname"] == "lab\r\nBcc: victim@evil.example"


def test_a_school_without_recipients_is_told_nothing(
    repo: SqlRepository, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    other = repo.add_site("south-academy")[0]
    toml = notify_toml(
        pki,
        smtp.port,
        recipients='[[notify.recipients]]\nsites = ["north-primary"]\nemail = ["a@b.example"]\n',
    )
    made = notifier(repo, secrets, toml)
    now = noon_after(time.time())
    started(made, now)
    send(repo, other, [alert(1, "critical")])
    made.run(now)
    made.run(made.digest_time(now + 86_400))
    assert smtp.messages() == []
    with repo.engine.connect() as conn:
        assert conn.execute(select(NotifyAlert)).all() == []


def test_retention_forgets_old_messages(
    repo: SqlRepository, site: SiteRef, smtp: SmtpServer, pki: ScratchPKI, secrets: Path
) -> None:
    settings = notifier(repo, secrets, notify_toml(pki, smtp.port)).settings
    made = Notifier(repo.engine, settings, ZONE, 86_400.0, CollectorMetrics())
    now = noon_after(time.time())
    started(made, now)
    send(repo, site, [alert(1)])
    made.run(now)
    assert len(messages(repo)) == 1
    made.run(made.digest_time(now + 3 * 86_400))  # the digest prunes what is over a day old
    assert messages(repo) == []
    with repo.engine.connect() as conn:
        assert ledger.pending(conn) == {}
        assert conn.execute(select(NotifyAlert)).all() == []
