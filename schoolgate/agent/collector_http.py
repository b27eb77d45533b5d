"""What the agent's two conversations with the collector share: the HTTP client (TLS, timeouts,
no redirects), the site's token, and how long to wait after a failure.

The uploader ships events up (``activity.uploader``); the policy sync takes the policy down
and the unblock requests up (``policy_sync``). Both are imported only when a collector is
configured, so the HTTP client is not otherwise in the DNS process.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final

import httpx

from schoolgate import __version__
from schoolgate.agent.activity.settings import UploadSettings

log = logging.getLogger(__name__)

BACKOFF_FIRST: Final = 1.0
BACKOFF_MOST: Final = 300.0
RETRY_AFTER_MOST: Final = 3600.0


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MOST)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_MOST)


def backoff(failures: int, most: float = BACKOFF_MOST) -> float:
    """Full jitter over a doubling, capped window: many schools coming back after a collector
    outage spread out instead of arriving together."""
    window = min(most, BACKOFF_FIRST * 2 ** min(failures, 20))
    return max(0.5, random.uniform(0, window))


def tls_context(settings: UploadSettings) -> ssl.SSLContext:
    """The system's trusted certificates, or only the configured CA file's."""
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return ssl.create_default_context()


def http_client(settings: UploadSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.url,
        verify=tls_context(settings) if settings.url.startswith("https:") else True,
        timeout=httpx.Timeout(settings.timeout),
        headers={"User-Agent": f"schoolgate-agent/{__version__}"},
        follow_redirects=False,
    )


async def close(task: asyncio.Task[None] | None, client: httpx.AsyncClient | None) -> None:
    """Stop a conversation's loop now and close its connections."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if client is not None:
        await client.aclose()


def read_token(token_file: Path, warn: Callable[[], bool]) -> str | None:
    """The site's token, read each time it is needed: a fixed token file works without a
    restart. ``warn`` says whether to log a problem now (a throttle)."""
    try:
        # utf-8-sig: a token pasted in an editor that saves a byte-order mark still works.
        token = token_file.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as exc:
        if warn():
            log.error("cannot read collector.token_file %s: %s", token_file, exc)
        return None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        if warn():
            log.error("collector.token_file %s holds no token", token_file)
        return None
    return token
