"""A real SMTP server (aiosmtpd) on 127.0.0.1, in a thread of the test, that keeps what it gets.

It offers STARTTLS with the scratch CA's certificate and takes mail only after STARTTLS and
AUTH with the one user it knows, as a district's mail server would. ``stop`` and ``start``
again keep the port, for a server that goes down and comes back.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USER = "schoolgate"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str  # who authenticated, "" for nobody
    encrypted: bool  # the session was under TLS when the mail came

    @property
    def message(self) -> EmailMessage:
        """The message as parsed, its lines ending in LF (on the wire: CRLF)."""
        data = self.data.replace(b"\r\n", b"\n")
        return message_from_bytes(data, policy=policy.default)


REFUSED_DOMAIN = "refused.example"  # recipients there are refused, as unknown mailboxes


class _Inbox:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@" + REFUSED_DOMAIN):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else b""
        data = envelope.original_content or b""
        with self.owner.lock:
            self.owner.received.append(
                Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=data,
                    login=login.decode(),
                    encrypted=session.ssl is not None,
                )
            )
        return "250 OK"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class SmtpServer:
    def __init__(self, tls: ssl.SSLContext | None, *, starttls: bool = True) -> None:
        self.tls = tls
        self.starttls = starttls  # False: a server that offers no STARTTLS at all
        self.port = 0
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def _protocol(self) -> SMTP:
        if not self.starttls:
            return SMTP(_Inbox(self), hostname="mail.test")
        return SMTP(
            _Inbox(self),
            hostname="mail.test",
            tls_context=self.tls,
            require_starttls=True,
            authenticator=_authenticate,
            auth_required=True,
            auth_require_tls=True,
        )

    def start(self) -> SmtpServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="smtp-server", daemon=True)
        thread.start()
        made = asyncio.run_coroutine_threadsafe(
            loop.create_server(self._protocol, "127.0.0.1", self.port), loop
        )
        server = made.result(10)
        self.port = server.sockets[0].getsockname()[1]
        self._loop, self._thread, self._server = loop, thread, server
        return self

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None or server is None:
            return

        async def close() -> None:
            server.close()
            await server.wait_closed()
            # Sessions still open (a client that never said QUIT) end here, not in a warning.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._server = None
