"""Downloading one list source over HTTP(S), politely and within limits.

A download is conditional (``If-None-Match`` / ``If-Modified-Since`` from the last accepted
copy), bounded (a timeout for each network step, an overall deadline, a size cap, a limited
number of redirects, never from https down to http) and streamed to a file, so a list of any
size costs a fixed amount of memory. Every failure is a ``FetchError`` with a message a person
can act on; the caller keeps the last good copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from schoolgate import __version__
from schoolgate.agent.files import atomic_writer

USER_AGENT: Final = f"schoolgate/{__version__} (list updater)"


class FetchError(Exception):
    """A download that did not produce a usable file."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float  # for each connect, read and write step, and ten times over for the whole
    max_bytes: int
    max_redirects: int
    max_list_bytes: int  # unpacked


@dataclass(frozen=True)
class Fetched:
    """The outcome of a download that did not fail."""

    changed: bool  # False: the server said 304, the last good copy is still current
    etag: str = ""
    last_modified: str = ""
    size: int = 0
    url: str = ""  # where the body came from, after redirects


def client(limits: FetchLimits) -> httpx.Client:
    return httpx.Client(
        follow_redirects=True,
        max_redirects=limits.max_redirects,
        timeout=httpx.Timeout(limits.timeout),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        trust_env=True,  # a school's outbound proxy, if it has one, from HTTPS_PROXY
    )


def fetch(
    http: httpx.Client,
    url: str,
    dest: Path,
    limits: FetchLimits,
    etag: str = "",
    last_modified: str = "",
) -> Fetched:
    """Download ``url`` into ``dest`` (replaced atomically), or learn that it is unchanged."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + limits.timeout * 10
    try:
        with http.stream("GET", url, headers=headers) as response:
            _check_redirects(url, response)
            if response.status_code == 304 and (etag or last_modified):
                return Fetched(False, etag, last_modified, url=str(response.url))
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise FetchError(
                    f"too large: the server announces {int(declared)} bytes, the limit is"
                    f" {limits.max_bytes} (updates.max_download_mb)"
                )
            size = _save(response, dest, limits.max_bytes, deadline)
            return Fetched(
                True,
                response.headers.get("ETag", ""),
                response.headers.get("Last-Modified", ""),
                size,
                str(response.url),
            )
    except httpx.TooManyRedirects:
        raise FetchError(f"more than {limits.max_redirects} redirects") from None
    except httpx.TimeoutException as exc:
        raise FetchError(f"timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None


def _check_redirects(url: str, response: httpx.Response) -> None:
    if not url.lower().startswith("https://"):
        return
    # Every hop, not only the last: https -> http -> https would hand the download to whoever
    # sits on the plain-text hop.
    for hop in (*response.history, response):
        if hop.url.scheme != "https":
            raise FetchError(f"refused a redirect from https to {hop.url.scheme}")


def _save(response: httpx.Response, dest: Path, max_bytes: int, deadline: float) -> int:
    size = 0
    with atomic_writer(dest, suffix=".part") as out:
        # A gzip Content-Encoding is undone here, a .gz file is unpacked later. Pieces are
        # taken as they arrive, so the deadline is checked after every read, however slowly a
        # server trickles.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(
                    f"too large: more than {max_bytes} bytes (updates.max_download_mb)"
                )
            if time.monotonic() > deadline:
                raise FetchError("too slow: the download did not finish in time")
            out.write(chunk)
    return size
