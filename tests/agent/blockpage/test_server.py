"""The block page over real HTTP on loopback, served from the test's own event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from schoolgate.agent.blockpage import (
    BlockInfo,
    BlockPageError,
    BlockPageServer,
    BlockPageSettings,
    ConnectionLimits,
    StoreError,
    UnblockStore,
)
from schoolgate.agent.blockpage.language import format_time
from schoolgate.agent.blockpage.texts import TEXTS
from tests.agent.blockpage.support import NOW, FakePolicy, raw_request, serving, shown

BLOCKED = {"Host": "blocked.example"}
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
HOSTILE = "<script>alert(1)</script>"
UNBLOCK = "/_schoolgate/unblock"


def form(name: str = "blocked.example", reason: str = "") -> dict[str, str]:
    return {"name": name, "reason": reason}


def says(page: httpx.Response, language: str, key: str) -> bool:
    return shown(TEXTS[language][key]) in page.text


# -- the page ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_block_page(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain, school_name="Hillside Primary") as (server, c):
        r = await c.get("/some/path?q=1", headers={"Host": "Blocked.Example:8080"})
        assert server.counters.pages_served == 1
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp
    page = r.text
    assert '<html lang="en">' in page
    assert says(r, "en", "blocked_heading")
    assert "Hillside Primary has blocked this site" in page
    assert "blocked.example" in page and "Games" in page and "ks2" in page
    assert format_time(datetime.fromtimestamp(NOW), "en") in page
    assert f'<form method="post" action="{UNBLOCK}"' in page
    assert '<input type="hidden" name="name" value="blocked.example">' in page
    assert "<script" not in page
    assert policy.calls == [("blocked.example", "127.0.0.1")]


@pytest.mark.asyncio
async def test_the_stylesheet_is_the_only_thing_the_policy_allows(
    store: UnblockStore, policy: FakePolicy
) -> None:
    async with serving(store, policy.explain) as (_, c):
        r = await c.get("/", headers=BLOCKED)
    found = re.search(r"<style>(.*?)</style>", r.text, re.DOTALL)
    assert found is not None
    digest = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in r.headers["content-security-policy"]
    assert "style=" not in r.text  # inline style attributes would be refused


@pytest.mark.asyncio
async def test_each_language(store: UnblockStore, policy: FakePolicy) -> None:
    cases = [
        ("en-GB,en;q=0.9", "en", "Games"),
        ("vi-VN,vi;q=0.9,en;q=0.5", "vi", "Trò chơi"),
        ("zh-CN,zh;q=0.9", "zh", "游戏"),
        ("zh-Hans", "zh", "游戏"),
        ("fr-FR", "vi", "Trò chơi"),  # the configured default
        ("", "vi", "Trò chơi"),
    ]
    async with serving(store, policy.explain, language="vi", contact="Room 12") as (_, c):
        for accept, language, category in cases:
            r = await c.get("/", headers={**BLOCKED, "Accept-Language": accept})
            assert r.status_code == 200, accept
            assert f'<html lang="{language}">' in r.text, accept
            assert r.headers["content-language"] == language
            for key in ("blocked_title", "blocked_heading", "blocked_intro", "label_reason"):
                assert says(r, language, key), (accept, key)
            assert says(r, language, "button_request"), accept
            assert category in r.text, accept
            assert shown(TEXTS[language]["contact_line"].format(contact="Room 12")) in r.text
            assert format_time(datetime.fromtimestamp(NOW), language) in r.text


@pytest.mark.asyncio
async def test_the_time_is_the_sites(store: UnblockStore, policy: FakePolicy) -> None:
    hanoi = ZoneInfo("Asia/Ho_Chi_Minh")  # NOW is 14:05 UTC
    async with serving(store, policy.explain, timezone=hanoi) as (_, c):
        en = await c.get("/", headers=BLOCKED)
        vi = await c.get("/", headers={**BLOCKED, "Accept-Language": "vi"})
    assert "21 November 2026 21:05" in en.text
    assert "21:05, ngày 21 tháng 11 năm 2026" in vi.text


@pytest.mark.asyncio
async def test_a_category_without_names_and_a_rule_without_category(
    store: UnblockStore, policy: FakePolicy
) -> None:
    policy.block("a.example", category="site-only", category_names={})
    policy.block("b.example", category=None, category_names={}, rule="deny list")
    async with serving(store, policy.explain) as (_, c):
        a = await c.get("/", headers={"Host": "a.example", "Accept-Language": "zh"})
        b = await c.get("/", headers={"Host": "b.example", "Accept-Language": "zh"})
    assert "site-only" in a.text
    assert says(b, "zh", "category_unknown")


@pytest.mark.asyncio
async def test_a_name_no_longer_blocked(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain) as (server, c):
        r = await c.get("/page", headers={"Host": "fine.example", "Accept-Language": "vi"})
        assert server.counters.pages_served == 0
    assert r.status_code == 200
    assert says(r, "vi", "notblocked_heading") and says(r, "vi", "try_again")
    assert '<a class="button" href="/">' in r.text  # this name's own front page, nowhere else
    assert "<form" not in r.text


@pytest.mark.asyncio
async def test_a_client_that_is_not_the_schools(store: UnblockStore, policy: FakePolicy) -> None:
    policy.strangers.add("127.0.0.1")
    async with serving(store, policy.explain) as (_, c):
        page = await c.get("/", headers=BLOCKED)
        post = await c.post(UNBLOCK, data=form(), headers=BLOCKED)
    assert page.status_code == post.status_code == 403
    assert says(page, "en", "error_not_ours")
    assert store.list() == []


@pytest.mark.asyncio
async def test_the_client_is_the_connection_not_a_header(
    store: UnblockStore, policy: FakePolicy
) -> None:
    spoof = {"X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9", "Forwarded": "for=10.9.9.9"}
    async with serving(store, policy.explain) as (_, c):
        await c.get("/", headers={**BLOCKED, **spoof})
        await c.post(UNBLOCK, data=form(), headers={**BLOCKED, **spoof})
    assert {client for _, client in policy.calls} == {"127.0.0.1"}
    assert [r.client_ip for r in store.list()] == ["127.0.0.1"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.asyncio
async def test_ipv6_clients(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain, listen=[("::1", 0), ("127.0.0.1", 0)]) as (s, c):
        assert [h for h, _ in s.addresses] == ["::1", "127.0.0.1"]
        r = await c.get("/", headers=BLOCKED)
    assert r.status_code == 200
    assert policy.calls == [("blocked.example", "::1")]


# -- hostile input ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hostile_hosts_are_refused_without_echo(
    store: UnblockStore, policy: FakePolicy
) -> None:
    hosts = [
        f"{HOSTILE}.example",
        '"><img src=x onerror=alert(1)>.example',
        "a" * 5000 + ".example",
        "10.20.0.53",
        "[::1]:80",
        "blocked.example:80:80",
    ]
    async with serving(store, policy.explain) as (_, c):
        for host in hosts:
            r = await c.get("/", headers={"Host": host})
            assert r.status_code == 400, host
            assert says(r, "en", "error_bad_host")
            assert host not in r.text and "alert(1)" not in r.text and "<img" not in r.text
    assert policy.calls == []


@pytest.mark.asyncio
async def test_bytes_no_client_would_send(store: UnblockStore, policy: FakePolicy) -> None:
    hosts = [b"bad\x01name.example", b"bad name.example", b"caf\xc3\xa9.example", b"a.example\x7f"]
    async with serving(store, policy.explain) as (server, _):
        port = server.addresses[0][1]
        for host in hosts:
            answer = await raw_request(
                port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 400"), host
            assert host not in answer
        no_host = await raw_request(port, b"GET / HTTP/1.0\r\n\r\n")
        tls = await raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        health = await raw_request(port, b"GET /_schoolgate/health HTTP/1.0\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400")
    assert tls.startswith(b"HTTP/1.1 400")
    assert health.startswith(b"HTTP/1.1 200")  # still serving
    assert policy.calls == []


@pytest.mark.asyncio
async def test_what_the_policy_says_is_escaped(store: UnblockStore, policy: FakePolicy) -> None:
    policy.block(
        "blocked.example",
        name=f"{HOSTILE}.example",
        category_names={"en": HOSTILE},
        group=f"{HOSTILE}&group",
    )
    async with serving(store, policy.explain, school_name=HOSTILE, contact=HOSTILE) as (_, c):
        r = await c.get("/", headers=BLOCKED)
        thanks = await c.post(UNBLOCK, data=form(reason=HOSTILE), headers=BLOCKED)
    assert thanks.status_code == 200
    for page in (r.text, thanks.text):
        assert "<script>" not in page and HOSTILE not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;group" in r.text
    assert [req.reason for req in store.list()] == [HOSTILE]  # kept as text, shown escaped


# -- methods and the health check -------------------------------------------------------------


@pytest.mark.asyncio
async def test_head_is_get_without_a_body(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain) as (_, c):
        get = await c.get("/", headers=BLOCKED)
        head = await c.head("/", headers=BLOCKED)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]


@pytest.mark.asyncio
async def test_other_methods(store: UnblockStore, policy: FakePolicy) -> None:
    cases = [
        ("PUT", "/"),
        ("DELETE", "/x"),
        ("OPTIONS", "/"),
        ("PATCH", UNBLOCK),
        ("POST", "/"),
        ("POST", "/_schoolgate/health"),
        ("TRACE", "/"),
    ]
    async with serving(store, policy.explain) as (_, c):
        for method, path in cases:
            r = await c.request(method, path, headers=BLOCKED, content=b"")
            assert r.status_code == 405, (method, path)
            assert "allow" in r.headers
    assert store.list() == []


@pytest.mark.asyncio
async def test_health(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain) as (_, c):
        by_address = await c.get("/_schoolgate/health")
        by_name = await c.get("/_schoolgate/health", headers=BLOCKED)
        head = await c.head("/_schoolgate/health")
    assert by_address.status_code == by_name.status_code == head.status_code == 200
    assert by_address.text == "ok"
    assert by_address.headers["content-type"].startswith("text/plain")
    assert policy.calls == []


# -- unblock requests -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unblock_request_is_stored(store: UnblockStore, policy: FakePolicy) -> None:
    headers = {**BLOCKED, "Accept-Language": "zh-CN"}
    reason = "  for my\r\nscience project "
    async with serving(store, policy.explain) as (server, c):
        r = await c.post(UNBLOCK, data=form(reason=reason), headers=headers)
        assert server.counters.requests_stored == 1
    assert r.status_code == 200
    assert '<html lang="zh">' in r.text
    assert says(r, "zh", "thanks_heading")
    assert shown(TEXTS["zh"]["thanks_text"].format(name="blocked.example")) in r.text
    [stored] = store.list()
    assert stored.created == NOW
    assert (stored.client_ip, stored.name, stored.group, stored.category) == (
        "127.0.0.1",
        "blocked.example",
        "ks2",
        "games",
    )
    assert (stored.mac, stored.hostname) == ("02:00:00:00:00:01", "ks2-laptop-7")
    assert (stored.reason, stored.language) == ("for my science project", "zh")
    assert not stored.shipped


@pytest.mark.asyncio
async def test_no_reason_is_fine(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain) as (_, c):
        r = await c.post(UNBLOCK, data={"name": "blocked.example"}, headers=BLOCKED)
    assert r.status_code == 200
    assert [req.reason for req in store.list()] == [None]


@pytest.mark.asyncio
async def test_the_same_request_again_is_thanked_not_stored(
    store: UnblockStore, policy: FakePolicy
) -> None:
    async with serving(store, policy.explain) as (server, c):
        first = await c.post(UNBLOCK, data=form(), headers=BLOCKED)
        again = await c.post(UNBLOCK, data=form(reason="please"), headers=BLOCKED)
        assert server.counters.requests_stored == 1
        assert server.counters.requests_duplicate == 1
    assert first.status_code == again.status_code == 200
    assert says(again, "en", "already_heading")
    assert len(store.list()) == 1


@pytest.mark.asyncio
async def test_requests_over_the_hourly_limit(store: UnblockStore, policy: FakePolicy) -> None:
    for i in range(3):
        policy.block(f"site{i}.example")
    async with serving(store, policy.explain, max_requests_per_hour=2) as (server, c):
        answers = [
            await c.post(UNBLOCK, data=form(f"site{i}.example"), headers=BLOCKED) for i in range(3)
        ]
        assert server.counters.requests_stored == 2
        assert server.counters.requests_rate_limited == 1
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert says(answers[2], "en", "already_heading")
    assert sorted(r.name for r in store.list()) == ["site0.example", "site1.example"]


@pytest.mark.asyncio
async def test_bad_requests(store: UnblockStore, policy: FakePolicy) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"name": "fine.example"}, "error_not_blocked"),
        ({"name": f"{HOSTILE}.example"}, "error_bad_form"),
        ({"name": "10.0.0.1"}, "error_bad_form"),
        ({"name": "blocked.example:80"}, "error_bad_form"),
        ({"reason": "no name"}, "error_bad_form"),
        ({}, "error_bad_form"),
    ]
    headers = {**BLOCKED, **FORM_TYPE, "Accept-Language": "vi"}
    async with serving(store, policy.explain) as (_, c):
        for data, key in cases:
            r = await c.post(UNBLOCK, data=data, headers=headers)
            assert r.status_code == 400, data
            assert says(r, "vi", key), data
            assert HOSTILE not in r.text and "alert(1)" not in r.text
    assert store.list() == []


@pytest.mark.asyncio
async def test_forms_that_cannot_be_read(store: UnblockStore, policy: FakePolicy) -> None:
    cases: list[tuple[bytes, dict[str, str]]] = [
        (b"name=blocked.example&name=other.example", {}),
        (b"name=blocked.example&reason=%FF%FE", {}),
        ("name=blocked.example&reason=café".encode(), {}),
        (b"&".join(b"f%d=1" % i for i in range(50)), {}),
        (b"name=blocked.example", {"Content-Type": "text/plain"}),
        (b"name=blocked.example", {"Content-Type": "multipart/form-data; boundary=x"}),
        (b"name=blocked.example", {"Sec-Fetch-Site": "cross-site"}),
        (b"name=blocked.example", {"Sec-Fetch-Site": "same-site"}),
        (b"name=blocked.example", {"Origin": "http://evil.example"}),
        (b"name=blocked.example", {"Referer": "http://evil.example/form"}),
    ]
    async with serving(store, policy.explain) as (_, c):
        for content, headers in cases:
            r = await c.post(UNBLOCK, content=content, headers={**BLOCKED, **FORM_TYPE, **headers})
            assert r.status_code == 400, content
            assert says(r, "en", "error_bad_form")
        # What a browser sends for its own form: accepted.
        same_origin = {**BLOCKED, "Sec-Fetch-Site": "same-origin", "Origin": "null"}
        ok = await c.post(UNBLOCK, data=form(), headers=same_origin)
        assert ok.status_code == 200
        named = {
            **BLOCKED,
            "Origin": "http://blocked.example",
            "Referer": "http://blocked.example/",
        }
        again = await c.post(UNBLOCK, data=form(), headers=named)
        assert again.status_code == 200  # thanked: the same request is already stored
    assert len(store.list()) == 1


@pytest.mark.asyncio
async def test_bodies_over_the_limit(store: UnblockStore, policy: FakePolicy) -> None:
    big = b"name=blocked.example&reason=" + b"x" * 5000

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with serving(store, policy.explain) as (server, c):
        declared = await c.post(UNBLOCK, content=big, headers={**BLOCKED, **FORM_TYPE})
        chunked = await c.post(UNBLOCK, content=chunks(), headers={**BLOCKED, **FORM_TYPE})
        assert (await c.get("/_schoolgate/health")).status_code == 200
        assert server.counters.requests_stored == 0
    assert declared.status_code == chunked.status_code == 413
    assert says(declared, "en", "error_too_large")
    assert store.list() == []


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unwritable_state_dir_answers_503(
    tmp_path: Path, policy: FakePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    broken = UnblockStore(blocker / "state")
    headers = {**BLOCKED, "Accept-Language": "zh"}
    with caplog.at_level(logging.ERROR, logger="schoolgate.agent.blockpage"):
        async with serving(broken, policy.explain) as (server, c):
            r = await c.post(UNBLOCK, data=form(), headers=headers)
            again = await c.post(UNBLOCK, data=form(), headers=headers)
            page = await c.get("/", headers=BLOCKED)
            assert server.counters.store_errors == 2
    broken.close()
    assert r.status_code == again.status_code == 503
    assert says(r, "zh", "error_unavailable")
    assert page.status_code == 200  # the page itself does not need the disk
    errors = [rec for rec in caplog.records if "cannot store an unblock request" in rec.message]
    assert len(errors) == 1  # a failing disk is reported, not once per pupil


class FullDisk(UnblockStore):
    def add(self, **_: object) -> object:  # type: ignore[override]
        raise StoreError("unblock requests in the state dir: database or disk is full")


@pytest.mark.asyncio
async def test_a_full_disk_answers_503(tmp_path: Path, policy: FakePolicy) -> None:
    full = FullDisk(tmp_path)
    async with serving(full, policy.explain) as (_, c):
        r = await c.post(UNBLOCK, data=form(), headers={**BLOCKED, "Accept-Language": "vi"})
    assert r.status_code == 503
    assert says(r, "vi", "error_unavailable")


@pytest.mark.asyncio
async def test_an_unexpected_error_is_a_500_and_the_server_carries_on(
    store: UnblockStore, policy: FakePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(name: str, client: str) -> BlockInfo | None:
        if name == "boom.example":
            raise RuntimeError("bug")
        return policy.explain(name, client)

    with caplog.at_level(logging.ERROR, logger="schoolgate.agent.blockpage"):
        async with serving(store, explode) as (server, c):
            r = await c.get("/", headers={"Host": "boom.example"})
            after = await c.get("/", headers=BLOCKED)
            assert server.counters.errors == 1
    assert r.status_code == 500
    assert "bug" not in r.text and "Traceback" not in r.text
    assert after.status_code == 200
    assert any(rec.exc_info for rec in caplog.records)


# -- starting and stopping --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_port_in_use_names_the_address(store: UnblockStore, policy: FakePolicy) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        listen = [("127.0.0.1", 0), ("127.0.0.1", port)]
        with pytest.raises(BlockPageError, match=f"127.0.0.1:{port}") as caught:
            async with serving(store, policy.explain, listen=listen):
                pass
    assert isinstance(caught.value, OSError)


@pytest.mark.asyncio
async def test_signals_stay_the_agents(store: UnblockStore, policy: FakePolicy) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serving(store, policy.explain) as (_, c):
        assert {sig: signal.getsignal(sig) for sig in before} == before
        assert (await c.get("/_schoolgate/health")).status_code == 200
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.asyncio
async def test_stop_closes_the_port(store: UnblockStore, policy: FakePolicy) -> None:
    async with serving(store, policy.explain) as (server, _):
        port = server.addresses[0][1]
    assert server.addresses == []
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{port}/_schoolgate/health")
    await server.stop()  # twice is harmless


# -- connections ------------------------------------------------------------------------------


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout=10) == b""
    except ConnectionResetError:
        return True


@pytest.mark.asyncio
async def test_idle_connections_are_capped_and_do_not_outlive_their_time(
    store: UnblockStore, policy: FakePolicy
) -> None:
    # One device opening sockets and sending nothing must not take the page from the others,
    # nor keep its sockets for ever.
    limits = ConnectionLimits(total=8, per_client=2, lifetime=1.0)
    server = BlockPageServer(
        BlockPageSettings((("127.0.0.1", 0),)), policy.explain, store, limits=limits
    )
    await server.start()
    host, port = server.addresses[0]
    try:
        idle = [await asyncio.open_connection(host, port) for _ in range(2)]
        over_reader, over_writer = await asyncio.open_connection(host, port)
        assert await _closed_by_server(over_reader)  # a third from the same device: closed
        over_writer.close()
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=10) as other:
            page = await other.get(f"http://{host}:{port}/", headers=BLOCKED)
        assert page.status_code == 200  # another device is served meanwhile
        for reader, writer in idle:
            assert await _closed_by_server(reader)  # their time ran out
            writer.close()
        again = [await asyncio.open_connection(host, port) for _ in range(2)]
        for _, writer in again:
            writer.close()
    finally:
        await server.stop()
