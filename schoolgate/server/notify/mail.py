"""Sending messages by email: SMTP from the notifier's worker thread, one session per run.

The session is encrypted before anything else is said: STARTTLS (port 587) or TLS from the
first byte (``implicit``, port 465), the server's certificate checked against the system's
CAs or the district's own (``ca_file``). A server that does not offer STARTTLS gets nothing:
the message waits, and the error says why. ``tls = "none"`` is for a relay on this machine.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from types import TracebackType

from schoolgate.server.notify.compose import header
from schoolgate.server.notify.settings import SmtpSettings


class SmtpDown(Exception):
    """The server could not be reached, or refused the session: no message goes for now."""


class Refused(Exception):
    """The server refused this one message (its sender, every recipient, or its content)."""


def build(
    smtp: SmtpSettings, to: Sequence[str], subject: str, text: str, site: str, now: float
) -> EmailMessage:
    """A plain-text message; ``subject`` is one line already (``compose.header``)."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = make_msgid("schoolgate", domain=smtp.sender.rpartition("@")[2])
    # RFC 3834: no out-of-office answers to the collector's sender address.
    message["Auto-Submitted"] = "auto-generated"
    # For the recipients' mail rules.
    message["X-Schoolgate-Site"] = header(site)
    message.set_content(text)
    return message


def _described(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        said = exc.smtp_error
        text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
        return f"{exc.smtp_code} {' '.join(text.split())}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient refused: " + "; ".join(
            f"{address}: {code} {text.decode('utf-8', 'replace')}"
            for address, (code, text) in exc.recipients.items()
        )
    return str(exc) or type(exc).__name__


class Mailer:
    """An SMTP session: opened (and authenticated) on entry, quit on exit."""

    def __init__(self, smtp: SmtpSettings) -> None:
        self.settings = smtp
        self._client: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        s = self.settings
        try:
            context = s.tls_context()
            client = (
                smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
                if s.tls == "implicit"
                else smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            )
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpDown(f"cannot connect to {s.host}:{s.port}: {_described(exc)}") from None
        try:
            client.ehlo()
            if s.tls == "starttls":
                # Raises when the server offers no STARTTLS: never fall back to plain text.
                client.starttls(context=context)
                client.ehlo()
            if s.username:
                client.login(s.username, s.password)
        except (OSError, smtplib.SMTPException) as exc:
            client.close()
            raise SmtpDown(f"{s.host}:{s.port} refused the session: {_described(exc)}") from None
        self._client = client
        return self

    def send(self, message: EmailMessage, to: Sequence[str]) -> dict[str, str]:
        """Send one message; the addresses the server refused (the others got it)."""
        assert self._client is not None, "send inside 'with Mailer(...)'"
        try:
            refused = self._client.send_message(message, self.settings.sender, list(to))
        except (
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused,
            smtplib.SMTPDataError,
            smtplib.SMTPNotSupportedError,
        ) as exc:
            raise Refused(_described(exc)) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpDown(f"the session with the server ended: {_described(exc)}") from None
        return {
            address: f"{code} {text.decode('utf-8', 'replace')}"
            for address, (code, text) in refused.items()
        }

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
