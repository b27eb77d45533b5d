"""The UDP socket pool against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from schoolgate.agent.dns import upstream as upstream_mod
from schoolgate.agent.dns.upstream import Health, UdpPool, UpstreamError
from schoolgate.agent.dns.wire import build_query, text_to_wire
from tests.support.upstream import FakeUpstream


def question(name: str) -> bytes:
    return text_to_wire(name) + b"\x00\x01\x00\x01"


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    ids: list[int] = []
    monkeypatch.setattr(upstream_mod, "_random_id", lambda: ids.pop(0))
    yield ids


@pytest.mark.asyncio
async def test_a_reused_id_is_not_timed_out_by_the_query_that_had_it_before(
    upstream: FakeUpstream, fixed_ids: list[int]
) -> None:
    upstream.behaviour.delay = 0.25
    upstream.behaviour.slow = {"b.example.org."}
    pool = UdpPool(upstream.host, upstream.port, Health(), timeout=0.3, size=1)
    outcomes: dict[str, bytes | UpstreamError] = {}
    fixed_ids.extend([7, 7])
    try:
        qa, qb = question("a.example.org"), question("b.example.org")
        pool.send(build_query(0, qa, 0x0100, False), qa, lambda o: outcomes.update(a=o))
        await asyncio.sleep(0.1)  # a is answered; its deadline (0.3 s) is still queued
        assert isinstance(outcomes["a"], bytes)
        pool.send(build_query(0, qb, 0x0100, False), qb, lambda o: outcomes.update(b=o))
        await asyncio.sleep(0.4)  # past a's deadline, before b's; b is answered at 0.35 s
    finally:
        pool.close()
    assert isinstance(outcomes["b"], bytes), outcomes["b"]


@pytest.mark.asyncio
async def test_a_silent_upstream_times_out(upstream: FakeUpstream) -> None:
    upstream.behaviour.silent = True
    pool = UdpPool(upstream.host, upstream.port, Health(), timeout=0.2)
    outcome: list[bytes | UpstreamError] = []
    try:
        q = question("x.example.org")
        pool.send(build_query(0, q, 0x0100, False), q, outcome.append)
        await asyncio.sleep(0.4)
    finally:
        pool.close()
    assert len(outcome) == 1
    assert isinstance(outcome[0], UpstreamError)
    assert str(outcome[0]) == "timed out"


@pytest.mark.asyncio
async def test_sockets_are_retired_and_replaced(upstream: FakeUpstream) -> None:
    pool = UdpPool(upstream.host, upstream.port, Health(), timeout=1.0, size=2, uses=3)
    answers: list[bytes | UpstreamError] = []
    ports: set[int] = set()
    try:
        for i in range(12):
            q = question(f"n{i}.example.org")
            pool.send(build_query(0, q, 0x0100, False), q, answers.append)
            ports.update(e.sock.getsockname()[1] for e in pool._active)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    finally:
        pool.close()
    assert len(answers) == 12
    assert all(isinstance(a, bytes) for a in answers)
    assert len(ports) >= 4  # 12 queries, 3 per socket: source ports keep changing


class _Callback:
    """A `done` callback that can be watched with a weak reference."""

    def __init__(self) -> None:
        self.outcomes: list[bytes | UpstreamError] = []

    def __call__(self, outcome: bytes | UpstreamError) -> None:
        self.outcomes.append(outcome)


@pytest.mark.asyncio
async def test_an_answered_query_is_freed_before_its_timeout(upstream: FakeUpstream) -> None:
    # The pool keeps a deadline for every query until its timeout: that deadline must not keep
    # the answered query's callback (and all it refers to) alive for the rest of the timeout.
    pool = UdpPool(upstream.host, upstream.port, Health(), timeout=30.0)
    callback = _Callback()
    watch = weakref.ref(callback)
    try:
        q = question("freed.example.org")
        pool.send(build_query(0, q, 0x0100, False), q, callback)
        for _ in range(100):
            if callback.outcomes:
                break
            await asyncio.sleep(0.01)
        assert len(callback.outcomes) == 1
        assert isinstance(callback.outcomes[0], bytes)
        del callback
        gc.collect()
        assert watch() is None
    finally:
        pool.close()
