"""Microbenchmark of the whole query path in one process: the handler the listeners call.

    .venv/bin/python bench/pipeline.py

Builds the real pipeline (``app.build_pipeline``) from a configuration with three groups, fills
the cache with upstream answers as the forwarder would, and times one call of the handler for
each kind of answer a school sees most:

- cache hit:         a name let through, answered from the cache (the finished-answer memo);
- blocked:           a listed name, answered with the memoized block answer;
- safesearch hit:    www.google.com for a pupil group, a CNAME to the safe host plus its
                     address, from the target's cache entry (the finished-answer memo);
- cname hit:         a cached answer with a CNAME, checked against the group's policy each time;
- staff, no rewrite: www.google.com for staff, a plain cache hit.

No sockets: this is the Python cost per query, which bounds what one core can answer. Each
figure is the best of 25 rounds of 20,000 calls. Every query is counted and recorded for the
activity log as in the agent; the buffer is emptied between rounds (outside the timing), as
the agent's writer empties it every second, so the figures are those of the append, never of
the cheaper drop. Nothing here runs in CI.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
import time
from pathlib import Path

from dnslib import CNAME, QTYPE, RR, A, DNSRecord
from micro import best_of

from schoolgate.agent.app import Recording, build_pipeline, cache_settings
from schoolgate.agent.config import parse
from schoolgate.agent.dns.cache import AnswerCache
from schoolgate.agent.dns.listeners import Address
from schoolgate.agent.dns.wire import parse_query, scan_response, text_to_wire
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.lists import list_sources
from schoolgate.agent.stats import Counters

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
state_dir = "{state}"
[upstream]
servers = ["udp://127.0.0.1:1"]
[sources]
defaults = false
[[lists]]
name = "adult"
category = "adult"
path = "{adult}"
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]
[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["127.0.0.3"]
[[groups]]
name = "guests"
age_tier = "guest"
default = true
[identity]
neighbours = false
"""


class NullReply:
    """Stands where a UDP socket would: every case here is answered at once, not later."""

    udp = True

    def send(self, data: bytes, addr: Address) -> None:
        raise AssertionError("answered later: the cache was not filled for this case")


def query(name: str, qid: int = 0x1234) -> bytes:
    return (
        qid.to_bytes(2, "big")
        + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + text_to_wire(name)
        + b"\x00\x01\x00\x01"
    )


def upstream_answer(name: str, *records: RR) -> bytes:
    record = DNSRecord.question(name, "A")
    record.header.qr = 1
    record.header.id = 0
    for rr in records:
        record.add_answer(rr)
    return bytes(record.pack())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        adult = Path(tmp) / "adult.txt"
        adult.write_text("blocked.example\n", encoding="utf-8")
        config = parse(
            CONFIG.format(state=Path(tmp) / "state", adult=adult), "bench", base=Path(tmp)
        )
        lists, _ = asyncio.run(ListStore(config.state_dir).compile(list_sources(config)))
        cache = AnswerCache(cache_settings(config))
        now = int(time.monotonic())
        fills = {
            "www.example.org": upstream_answer(
                "www.example.org", RR("www.example.org", QTYPE.A, rdata=A("192.0.2.1"), ttl=3600)
            ),
            "forcesafesearch.google.com": upstream_answer(
                "forcesafesearch.google.com",
                RR("forcesafesearch.google.com", QTYPE.A, rdata=A("216.239.38.120"), ttl=3600),
            ),
            "www.google.com": upstream_answer(
                "www.google.com", RR("www.google.com", QTYPE.A, rdata=A("142.250.1.1"), ttl=3600)
            ),
            "cdn.alias.example": upstream_answer(
                "cdn.alias.example",
                RR("cdn.alias.example", QTYPE.CNAME, rdata=CNAME("edge.example.net"), ttl=3600),
                RR("edge.example.net", QTYPE.A, rdata=A("192.0.2.9"), ttl=3600),
            ),
        }
        for name, raw in fills.items():
            q = parse_query(query(name))
            cache.put(q.key, scan_response(raw, q.upstream_question), now)

        async def run() -> list[tuple[str, float]]:
            recording = Recording.fresh(config)
            pipeline = build_pipeline(config, lists, cache, Counters(), recording=recording)
            handle = pipeline.handler
            reply = NullReply()
            cases = [
                ("cache hit", query("www.example.org"), "127.0.0.2"),
                ("blocked", query("www.blocked.example"), "127.0.0.2"),
                ("safesearch hit", query("www.google.com"), "127.0.0.2"),
                ("cname hit", query("cdn.alias.example"), "127.0.0.2"),
                ("staff, no rewrite", query("www.google.com"), "127.0.0.3"),
            ]
            results = []
            for label, data, source in cases:
                addr = (source, 40000)
                answer = handle(data, addr, reply)
                assert answer, label
                call = functools.partial(handle, data, addr, reply)
                results.append((label, best_of(call, drain=recording.events.items.clear)))
                assert not recording.events.dropped, "the buffer filled: the figures would lie"
            return results

        for label, micros in asyncio.run(run()):
            print(f"| {label} | {micros:.2f} us | {1e6 / micros:,.0f} per second |")
        lists.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
