"""Downloading a list source: validators, status codes, size caps, timeouts and redirects."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from schoolgate.agent.filter import fetch
from schoolgate.agent.filter.fetch import Fetched, FetchError, FetchLimits
from tests.support.lists_server import ListServer, gz

LIMITS = FetchLimits(timeout=5.0, max_bytes=1024 * 1024, max_redirects=5, max_list_bytes=1 << 24)
BODY = b"# a list\nblocked.test\nbad.example\n"
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"


def limits(
    timeout: float = LIMITS.timeout,
    max_bytes: int = LIMITS.max_bytes,
    max_redirects: int = LIMITS.max_redirects,
) -> FetchLimits:
    return FetchLimits(timeout, max_bytes, max_redirects, LIMITS.max_list_bytes)


def get(
    url: str,
    dest: Path,
    lim: FetchLimits = LIMITS,
    etag: str = "",
    last_modified: str = "",
) -> Fetched:
    with fetch.client(lim) as http:
        return fetch.fetch(http, url, dest, lim, etag=etag, last_modified=last_modified)


def header(headers: dict[str, str], name: str) -> str | None:
    """A request header by name, whatever its case on the wire."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    directory = tmp_path / "downloads"
    directory.mkdir()
    return directory


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- a plain 200 ---------------------------------------------------------------------------


def test_200_saves_exact_bytes_with_validators(list_server: ListServer, downloads: Path) -> None:
    body = bytes(range(256)) * 40 + BODY  # binary content, not only text
    url = list_server.serve("/adult.txt", body, etag=ETAG, last_modified=LAST_MODIFIED)
    dest = downloads / "adult.raw"

    result = get(url, dest)

    assert result == Fetched(True, ETAG, LAST_MODIFIED, len(body), url)
    assert dest.read_bytes() == body
    assert sorted(p.name for p in downloads.iterdir()) == ["adult.raw"]


def test_200_without_validators_returns_empty_ones(
    list_server: ListServer, downloads: Path
) -> None:
    url = list_server.serve("/plain.txt", BODY)

    result = get(url, downloads / "plain.raw")

    assert result.changed
    assert (result.etag, result.last_modified) == ("", "")
    assert result.size == len(BODY)


def test_200_replaces_an_existing_file(list_server: ListServer, downloads: Path) -> None:
    dest = downloads / "adult.raw"
    dest.write_bytes(b"old content that is longer than the new one\n" * 10)
    url = list_server.serve("/adult.txt", BODY)

    get(url, dest)

    assert dest.read_bytes() == BODY
    assert [p.name for p in downloads.iterdir()] == ["adult.raw"]


def test_missing_parent_directory_is_created(list_server: ListServer, tmp_path: Path) -> None:
    url = list_server.serve("/adult.txt", BODY)
    dest = tmp_path / "state" / "lists" / "adult.raw"

    get(url, dest)

    assert dest.read_bytes() == BODY


def test_empty_body_is_saved(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/empty.txt", b"")
    dest = downloads / "empty.raw"

    result = get(url, dest)

    assert result.changed and result.size == 0
    assert dest.read_bytes() == b""


def test_compressed_file_is_saved_as_is(list_server: ListServer, downloads: Path) -> None:
    body = gz(BODY * 100)
    url = list_server.serve("/adult.txt.gz", body)
    dest = downloads / "adult.raw"

    get(url, dest)

    assert dest.read_bytes() == body


def test_chunked_body_is_saved(list_server: ListServer, downloads: Path) -> None:
    body = b"chunked.example\n" * 5000
    url = list_server.serve("/chunked.txt", body, chunked=True)
    dest = downloads / "chunked.raw"

    result = get(url, dest)

    assert result.size == len(body)
    assert dest.read_bytes() == body


def test_user_agent_names_schoolgate(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/adult.txt", BODY)

    get(url, downloads / "adult.raw")

    (request,) = list_server.asked("/adult.txt")
    agent = header(request.headers, "User-Agent")
    assert agent is not None and agent.startswith("schoolgate/")
    assert agent == fetch.USER_AGENT


def test_unconditional_request_sends_no_validators(
    list_server: ListServer, downloads: Path
) -> None:
    url = list_server.serve("/adult.txt", BODY, etag=ETAG)

    get(url, downloads / "adult.raw")

    (request,) = list_server.asked("/adult.txt")
    assert header(request.headers, "If-None-Match") is None
    assert header(request.headers, "If-Modified-Since") is None


# --- conditional requests ------------------------------------------------------------------


def test_conditional_request_sends_both_validators(
    list_server: ListServer, downloads: Path
) -> None:
    url = list_server.serve("/adult.txt", BODY, etag=ETAG, last_modified=LAST_MODIFIED)

    get(url, downloads / "adult.raw", etag=ETAG, last_modified=LAST_MODIFIED)

    (request,) = list_server.asked("/adult.txt")
    assert header(request.headers, "If-None-Match") == ETAG
    assert header(request.headers, "If-Modified-Since") == LAST_MODIFIED


def test_304_is_unchanged_and_leaves_dest(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/adult.txt", b"new content\n", etag=ETAG)
    dest = downloads / "adult.raw"
    dest.write_bytes(BODY)

    result = get(url, dest, etag=ETAG, last_modified=LAST_MODIFIED)

    assert result == Fetched(False, ETAG, LAST_MODIFIED, 0, url)
    assert dest.read_bytes() == BODY
    assert [p.name for p in downloads.iterdir()] == ["adult.raw"]


def test_304_without_a_last_copy_does_not_create_dest(
    list_server: ListServer, downloads: Path
) -> None:
    url = list_server.serve("/adult.txt", BODY, etag=ETAG)
    dest = downloads / "adult.raw"

    result = get(url, dest, etag=ETAG)

    assert not result.changed
    assert not dest.exists()


def test_304_to_if_modified_since_alone(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/adult.txt", status=304)
    dest = downloads / "adult.raw"
    dest.write_bytes(BODY)

    result = get(url, dest, last_modified=LAST_MODIFIED)

    (request,) = list_server.asked("/adult.txt")
    assert header(request.headers, "If-Modified-Since") == LAST_MODIFIED
    assert header(request.headers, "If-None-Match") is None
    assert result == Fetched(False, "", LAST_MODIFIED, 0, url)
    assert dest.read_bytes() == BODY


def test_changed_etag_downloads_again(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/adult.txt", b"v2 content\n", etag='"v2"')
    dest = downloads / "adult.raw"
    dest.write_bytes(BODY)

    result = get(url, dest, etag=ETAG)

    assert result.changed and result.etag == '"v2"'
    assert dest.read_bytes() == b"v2 content\n"


def test_304_to_unconditional_request_is_an_error(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/adult.txt", status=304)
    dest = downloads / "adult.raw"

    with pytest.raises(FetchError, match="304"):
        get(url, dest)

    assert not dest.exists()


# --- HTTP errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "404 Not Found"), (500, "500 Internal Server Error"), (403, "403 Forbidden")],
)
def test_error_status_names_it(
    list_server: ListServer, downloads: Path, status: int, words: str
) -> None:
    url = list_server.serve("/adult.txt", b"error page\n", status=status)
    dest = downloads / "adult.raw"
    dest.write_bytes(BODY)

    with pytest.raises(FetchError, match=words):
        get(url, dest)

    assert dest.read_bytes() == BODY
    assert [p.name for p in downloads.iterdir()] == ["adult.raw"]


def test_unknown_path_is_404(list_server: ListServer, downloads: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        get(list_server.url("/nowhere.txt"), downloads / "adult.raw")


# --- size caps -----------------------------------------------------------------------------


def test_announced_size_over_cap_is_refused(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/big.txt", b"x" * 5000)
    dest = downloads / "big.raw"

    with pytest.raises(FetchError, match="too large") as caught:
        get(url, dest, limits(max_bytes=4999))

    assert "5000" in str(caught.value) and "4999" in str(caught.value)
    assert list(downloads.iterdir()) == []


def test_announced_size_at_cap_is_accepted(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/exact.txt", b"x" * 5000)
    dest = downloads / "exact.raw"

    result = get(url, dest, limits(max_bytes=5000))

    assert result.size == 5000
    assert dest.read_bytes() == b"x" * 5000


def test_chunked_body_over_cap_leaves_nothing(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/big.txt", b"y" * 300 * 1024, chunked=True)
    dest = downloads / "big.raw"

    with pytest.raises(FetchError, match="too large"):
        get(url, dest, limits(max_bytes=100 * 1024))

    assert list(downloads.iterdir()) == []


def test_chunked_body_over_cap_keeps_last_copy(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/big.txt", b"y" * 20_000, chunked=True)
    dest = downloads / "big.raw"
    dest.write_bytes(BODY)

    with pytest.raises(FetchError, match="too large"):
        get(url, dest, limits(max_bytes=19_999))

    assert dest.read_bytes() == BODY
    assert [p.name for p in downloads.iterdir()] == ["big.raw"]


def test_chunked_body_at_cap_is_accepted(list_server: ListServer, downloads: Path) -> None:
    body = b"z" * 20_000
    url = list_server.serve("/exact.txt", body, chunked=True)
    dest = downloads / "exact.raw"

    get(url, dest, limits(max_bytes=20_000))

    assert dest.read_bytes() == body


# --- slow servers --------------------------------------------------------------------------


def test_server_slower_than_timeout_times_out(list_server: ListServer, downloads: Path) -> None:
    url = list_server.serve("/slow.txt", BODY, delay=1.5)
    dest = downloads / "slow.raw"

    with pytest.raises(FetchError, match="timed out"):
        get(url, dest, limits(timeout=0.3))

    assert list(downloads.iterdir()) == []


def test_trickle_past_overall_deadline_fails(list_server: ListServer, downloads: Path) -> None:
    # Each 1 KiB piece arrives well inside the 0.15 s step timeout, but the 36 pieces take
    # longer than the 1.5 s deadline for the whole download.
    url = list_server.serve("/trickle.txt", b"t" * 36 * 1024, trickle=0.045)
    dest = downloads / "trickle.raw"

    with pytest.raises(FetchError, match=r"too slow|timed out"):
        get(url, dest, limits(timeout=0.15))

    assert list(downloads.iterdir()) == []


# --- redirects -----------------------------------------------------------------------------


def test_redirect_chain_is_followed(list_server: ListServer, downloads: Path) -> None:
    final = list_server.serve("/lists/adult.txt", BODY, etag=ETAG)
    middle = list_server.serve("/moved/adult.txt", redirect=final)
    start = list_server.serve("/adult.txt", redirect=middle)
    dest = downloads / "adult.raw"

    result = get(start, dest, limits(max_redirects=2))

    assert result.url == final
    assert result.etag == ETAG
    assert dest.read_bytes() == BODY
    for path in ("/adult.txt", "/moved/adult.txt", "/lists/adult.txt"):
        assert len(list_server.asked(path)) == 1


def test_too_many_redirects_is_an_error(list_server: ListServer, downloads: Path) -> None:
    final = list_server.serve("/lists/adult.txt", BODY)
    middle = list_server.serve("/moved/adult.txt", redirect=final)
    start = list_server.serve("/adult.txt", redirect=middle)
    dest = downloads / "adult.raw"

    with pytest.raises(FetchError, match="more than 1 redirects"):
        get(start, dest, limits(max_redirects=1))

    assert list_server.asked("/lists/adult.txt") == []
    assert list(downloads.iterdir()) == []


def test_redirect_loop_is_an_error(list_server: ListServer, downloads: Path) -> None:
    list_server.serve("/a.txt", redirect=list_server.url("/b.txt"))
    list_server.serve("/b.txt", redirect=list_server.url("/a.txt"))

    with pytest.raises(FetchError, match="redirects"):
        get(list_server.url("/a.txt"), downloads / "a.raw")


def test_redirect_to_missing_page_names_status(list_server: ListServer, downloads: Path) -> None:
    start = list_server.serve("/adult.txt", redirect=list_server.url("/gone.txt"))

    with pytest.raises(FetchError, match="HTTP 404"):
        get(start, downloads / "adult.raw")


def test_304_after_redirect_reports_final_url(list_server: ListServer, downloads: Path) -> None:
    final = list_server.serve("/lists/adult.txt", BODY, etag=ETAG)
    start = list_server.serve("/adult.txt", redirect=final)

    result = get(start, downloads / "adult.raw", etag=ETAG)

    assert not result.changed
    assert result.url == final


def response_at(url: str, history: list[httpx.Response] | None = None) -> httpx.Response:
    return httpx.Response(200, request=httpx.Request("GET", url), history=history)


def test_https_to_http_redirect_is_refused() -> None:
    with pytest.raises(FetchError, match="https to http"):
        fetch._check_redirects("https://a.example/", response_at("http://x.example/"))


def test_https_scheme_check_ignores_case() -> None:
    with pytest.raises(FetchError, match="https to http"):
        fetch._check_redirects("HTTPS://a.example/", response_at("http://x.example/"))


@pytest.mark.parametrize(
    ("url", "final"),
    [
        ("https://a.example/", "https://b.example/list"),
        ("http://a.example/", "https://b.example/list"),
        ("http://a.example/", "http://b.example/list"),
    ],
)
def test_redirects_that_keep_or_upgrade_scheme_pass(url: str, final: str) -> None:
    fetch._check_redirects(url, response_at(final))


def test_https_via_http_hop_is_refused() -> None:
    hop = httpx.Response(302, request=httpx.Request("GET", "http://b.example/"))
    with pytest.raises(FetchError):
        fetch._check_redirects("https://a.example/", response_at("https://c.example/", [hop]))


# --- unreachable servers -------------------------------------------------------------------


def test_closed_port_is_an_error(closed_port: int, downloads: Path) -> None:
    with pytest.raises(FetchError, match="ConnectError"):
        get(f"http://127.0.0.1:{closed_port}/adult.txt", downloads / "adult.raw")

    assert list(downloads.iterdir()) == []
