"""Telling systemd how the service is doing: the notify protocol of ``sd_notify(3)``.

Under a unit with ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET`` and
waits for ``READY=1`` before it counts the service as started, so units ordered after it (and
``systemctl start`` itself) wait until the DNS listeners are open and the lists are loaded.
``WatchdogSec=`` adds ``WATCHDOG_USEC``: the service must say ``WATCHDOG=1`` at least that
often, and systemd restarts one whose event loop has stopped turning.

Written here rather than taken from a library: the protocol is one datagram per message, and
the packages for it either need libsystemd's headers and a compiler on the Pi or have not been
maintained for years. Outside systemd every call does nothing. A message that cannot be sent
is logged once and never raised: telling the service manager must not stop a DNS service.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Final

log = logging.getLogger(__name__)

_SOCKET_VARIABLE: Final = "NOTIFY_SOCKET"
_WATCHDOG_VARIABLE: Final = "WATCHDOG_USEC"
_WATCHDOG_PID_VARIABLE: Final = "WATCHDOG_PID"


class ServiceManager:
    """The service manager's notify socket, as the environment gives it (or none)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        self.address = _address(env.get(_SOCKET_VARIABLE, ""))
        self.watchdog_seconds = _watchdog(env)
        self._failed = False

    @property
    def present(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> bool:
        """The service is serving: listeners open, lists loaded."""
        return self._send("READY=1", *_status(status))

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def alive(self) -> bool:
        """The watchdog's keep-alive."""
        return self._send("WATCHDOG=1")

    def _send(self, *fields: str) -> bool:
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot tell the service manager %s: %s", fields[0], exc)
            return False
        return True


def _address(value: str) -> str | bytes | None:
    """The socket's address: a path, or an abstract name written with a leading '@'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # unset, or a kind of address (vsock) the service never runs under


def _watchdog(env: dict[str, str]) -> float | None:
    """Seconds between the keep-alives systemd expects, when the watchdog is for this process."""
    try:
        usec = int(env.get(_WATCHDOG_VARIABLE, ""))
    except ValueError:
        return None
    pid = env.get(_WATCHDOG_PID_VARIABLE, "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


def _status(text: str) -> tuple[str, ...]:
    # One line: a newline would start another field of the message.
    line = " ".join(text.split())
    return (f"STATUS={line}",) if line else ()
