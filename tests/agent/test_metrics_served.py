"""The Prometheus endpoint of a running agent: real queries, a real scrape, and the output
checked by promtool as Prometheus itself would read it."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.process import free_port, promtool, running_agent
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for

GROUPS = """
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]
deny = ["denied.example"]

[[groups]]
name = "guests"
age_tier = "guest"
default = true

[identity]
neighbours = false

[metrics]
listen = "127.0.0.1:0"
"""


def ask(agent: AgentThread, name: str, source: str, qtype: str = "A") -> None:
    query = dns.message.make_query(name, qtype)
    dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)


def scrape(agent: AgentThread) -> str:
    assert agent.agent is not None and agent.agent.metrics is not None
    host, port = agent.agent.metrics.address
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_queries_blocks_cache_and_upstreams_are_counted(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    agent = make_agent(GROUPS)
    ask(agent, "www.example.org", "127.0.0.2")
    ask(agent, "www.example.org", "127.0.0.2")
    ask(agent, "www.example.org", "127.0.0.2", "HTTPS")
    ask(agent, "bad.example", "127.0.0.2")  # the test block list: adult
    ask(agent, "bad.example", "127.0.0.5", "TYPE65000")  # a guest, a type without a label
    ask(agent, "www.denied.example", "127.0.0.2")  # the group's deny list: no category
    assert agent.agent is not None
    wait_for(lambda: agent.agent is not None and agent.agent.activity.writer.written == 6)
    found = samples(scrape(agent))

    queries = "schoolgate_dns_queries_total"
    assert value(found, queries, group="ks2", qtype="A", outcome="upstream") == 1
    assert value(found, queries, group="ks2", qtype="A", outcome="cached") == 1
    assert value(found, queries, group="ks2", qtype="HTTPS", outcome="upstream") == 1
    assert value(found, queries, group="ks2", qtype="A", outcome="blocked") == 2
    assert value(found, queries, group="guests", qtype="other", outcome="blocked") == 1
    blocked = "schoolgate_dns_blocked_total"
    assert value(found, blocked, group="ks2", category="adult") == 1
    assert value(found, blocked, group="guests", category="adult") == 1
    assert value(found, blocked, group="ks2", category="deny-list") == 1
    assert value(found, "schoolgate_dns_request_duration_seconds_count") == 6
    assert value(found, "schoolgate_dns_request_duration_seconds_bucket", le="+Inf") == 6
    assert value(found, "schoolgate_cache_hits_total") == 1
    assert value(found, "schoolgate_cache_misses_total") == 2
    assert value(found, "schoolgate_cache_entries") == 2
    label = f"udp://{upstream.host}:{upstream.port}"
    assert value(found, "schoolgate_upstream_queries_total", upstream=label) == 2
    assert value(found, "schoolgate_upstream_errors_total", upstream=label) == 0
    assert value(found, "schoolgate_upstream_up", upstream=label) == 1
    assert value(found, "schoolgate_upstream_request_duration_seconds_count", upstream=label) == 2
    assert value(found, "schoolgate_list_entries", category="adult") == 3
    assert value(found, "schoolgate_lists_built_timestamp_seconds") > 1.7e9
    assert value(found, "schoolgate_events_written_total") == 6
    assert value(found, "schoolgate_events_dropped_total") == 0
    assert value(found, "schoolgate_build_info", version=found_version(found), python=py()) == 1
    assert value(found, "process_resident_memory_bytes") > 0

    # Never a client address or a name as a label: those belong in the activity log.
    text = scrape(agent)
    assert "127.0.0.2" not in text and "example" not in text


def found_version(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    for name, labels in found:
        if name == "schoolgate_build_info":
            return dict(labels)["version"]
    raise AssertionError("no schoolgate_build_info")


def py() -> str:

    return platform.python_version()


def test_counters_survive_a_reload(make_agent: AgentFactory) -> None:
    agent = make_agent(GROUPS)
    ask(agent, "bad.example", "127.0.0.2")
    assert agent.reload()
    ask(agent, "bad.example", "127.0.0.2")
    found = samples(scrape(agent))
    assert value(found, "schoolgate_dns_blocked_total", group="ks2", category="adult") == 2


def test_promtool_accepts_the_output(make_agent: AgentFactory, tmp_path: Path) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (./dev test takes it from Debian's prometheus)")
    agent = make_agent(GROUPS)
    ask(agent, "www.example.org", "127.0.0.2")
    ask(agent, "bad.example", "127.0.0.2")
    text = scrape(agent)
    checked = subprocess.run(
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stderr


def test_an_endpoint_that_cannot_listen_leaves_dns_running(
    make_agent: AgentFactory, tmp_path: Path
) -> None:

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        agent = make_agent(GROUPS.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        assert agent.agent is not None and agent.agent.metrics is None
        ask(agent, "www.example.org", "127.0.0.2")  # DNS carries on
    finally:
        taken.close()


def test_run_takes_the_metrics_flag(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    log = tmp_path / "agent.log"
    with running_agent(
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path / "state"),
        "--metrics",
        f"127.0.0.1:{metrics}",
        port=port,
        log=log,
    ):
        response = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        assert response.status_code == 200
        assert "# TYPE schoolgate_dns_queries_total counter" in response.text
    assert f"metrics on http://127.0.0.1:{metrics}/metrics" in log.read_text(encoding="utf-8")
