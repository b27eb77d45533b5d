"""Posting messages to the webhook: JSON, signed with HMAC-SHA256, with a timeout.

The signature covers the timestamp and the body exactly as sent::

    X-Schoolgate-Timestamp: 1763715600
    X-Schoolgate-Signature: sha256=HEX( HMAC-SHA256(secret, "1763715600" + "." + body) )

A receiver recomputes it over the raw body with the shared secret, compares in constant time,
and refuses a timestamp far from its own clock, so that a post captured on the way cannot be
sent again later. ``X-Schoolgate-Delivery`` is the message's id, the same on every retry, for
a receiver that wants to drop a post it has had already (a timeout after the receiver took
it makes the collector send it again).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from types import TracebackType
from typing import Any, Final

import httpx
import msgspec

from schoolgate import __version__
from schoolgate.server.notify.settings import WebhookSettings

TIMESTAMP: Final = "X-Schoolgate-Timestamp"
SIGNATURE: Final = "X-Schoolgate-Signature"
DELIVERY: Final = "X-Schoolgate-Delivery"


class WebhookDown(Exception):
    """The receiver could not be reached, or did not answer in time."""


class WebhookRefused(Exception):
    """The receiver answered, but not with a 2xx status."""


def encode(payload: dict[str, Any]) -> bytes:
    return msgspec.json.encode(payload)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Schoolgate-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class Poster:
    """An HTTP client for the webhook, for one run: opened on entry, closed on exit."""

    def __init__(self, webhook: WebhookSettings) -> None:
        self.settings = webhook
        self._client = httpx.Client(
            timeout=webhook.timeout,
            verify=webhook.tls_context(),
            # A redirect would send the signed alerts to somewhere not configured.
            follow_redirects=False,
            headers={"User-Agent": f"schoolgate-collector/{__version__}"},
        )

    def __enter__(self) -> Poster:
        return self

    def post(self, body: bytes, delivery: str) -> None:
        # The time of sending, not of the run: the receiver checks it against its own clock.
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP: timestamp,
            SIGNATURE: signature(self.settings.secret, timestamp, body),
            DELIVERY: delivery,
        }
        try:
            answer = self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise WebhookDown(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status_code < 300:
            raise WebhookRefused(f"answered HTTP {answer.status_code} {answer.reason_phrase}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.close()
