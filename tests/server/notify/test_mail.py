"""Email over a real SMTP server: STARTTLS with the certificate checked, then AUTH; never in
the clear, never to a server whose certificate does not check out."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import pytest

from schoolgate.server.notify.mail import Mailer, Refused, SmtpDown, build
from schoolgate.server.notify.settings import SmtpSettings
from tests.support.certs import ScratchPKI
from tests.support.process import free_port
from tests.support.smtp_server import PASSWORD, REFUSED_DOMAIN, USER, SmtpServer


def settings(pki: ScratchPKI, port: int, **changed: object) -> SmtpSettings:
    made = SmtpSettings(
        host="127.0.0.1",
        port=port,
        tls="starttls",
        username=USER,
        password=PASSWORD,
        sender="schoolgate@district.example",
        timeout=10,
        ca_file=pki.ca_file,
    )
    return dataclasses.replace(made, **changed)  # type: ignore[arg-type]


def test_a_message_goes_after_starttls_and_auth(smtp: SmtpServer, pki: ScratchPKI) -> None:
    s = settings(pki, smtp.port)
    to = ["lead@north.example", "it@district.example"]
    message = build(s, to, "[schoolgate] north-primary: test", "Hello.\n", "north-primary", 0.0)
    with Mailer(s) as mailer:
        assert mailer.send(message, to) == {}
    (got,) = smtp.messages()
    assert got.encrypted and got.login == USER
    assert got.mail_from == "schoolgate@district.example"
    assert got.rcpt_tos == to
    mail = got.message
    assert mail["From"] == "schoolgate@district.example"
    assert mail["To"] == "lead@north.example, it@district.example"
    assert mail["Subject"] == "[schoolgate] north-primary: test"
    assert mail["Date"].datetime == datetime(1970, 1, 1, tzinfo=UTC)
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Schoolgate-Site"] == "north-primary"
    assert mail["Message-ID"].endswith("@district.example>")
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content() == "Hello.\n"


def test_a_server_without_starttls_is_told_nothing(pki: ScratchPKI) -> None:
    plain = SmtpServer(None, starttls=False).start()
    try:
        with pytest.raises(SmtpDown, match="STARTTLS"), Mailer(settings(pki, plain.port)):
            pass
    finally:
        plain.stop()
    assert plain.messages() == []


def test_a_certificate_from_another_ca_is_refused(smtp: SmtpServer, pki: ScratchPKI) -> None:
    # The system's CAs do not know the scratch CA: as if somebody stood in for the server.
    with (
        pytest.raises(SmtpDown, match="CERTIFICATE_VERIFY_FAILED"),
        Mailer(settings(pki, smtp.port, ca_file=None)),
    ):
        pass


def test_a_wrong_password_is_said(smtp: SmtpServer, pki: ScratchPKI) -> None:
    with (
        pytest.raises(SmtpDown, match="refused the session: 535"),
        Mailer(settings(pki, smtp.port, password="not the password")),
    ):
        pass


def test_nobody_listening_is_said() -> None:
    s = SmtpSettings("127.0.0.1", free_port(), "starttls", "", "", "a@b.example", 5)
    with pytest.raises(SmtpDown, match=r"cannot connect to 127\.0\.0\.1"), Mailer(s):
        pass


def test_refused_recipients_are_said(smtp: SmtpServer, pki: ScratchPKI) -> None:
    s = settings(pki, smtp.port)
    gone = f"left@{REFUSED_DOMAIN}"
    with Mailer(s) as mailer:
        message = build(s, [gone], "subject", "text\n", "north-primary", time.time())
        with pytest.raises(Refused, match=f"every recipient refused: {gone}: 550"):
            mailer.send(message, [gone])
        # The session goes on: the next message, to a mailbox that exists and one that does
        # not, reaches the one that does.
        to = ["lead@north.example", gone]
        message = build(s, to, "subject", "text\n", "north-primary", time.time())
        assert mailer.send(message, to) == {gone: "550 5.1.1 no such mailbox"}
    assert [m.rcpt_tos for m in smtp.messages()] == [["lead@north.example"]]
