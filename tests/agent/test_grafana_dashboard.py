"""The Grafana dashboard in docs/grafana: its variables, that every panel asks the chosen data
source about the chosen job, a layout without overlaps, and, against a running agent, that
every metric it names is one the agent really exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.waiting import wait_for

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "schoolgate-agent.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"\b(?:schoolgate|process)_[a-z_]+\b")
WIDTH = 24

VARIABLES = {
    "job": "label_values(schoolgate_build_info, job)",
    "instance": 'label_values(schoolgate_build_info{job="$job"}, instance)',
    "group": 'label_values(schoolgate_dns_queries_total{job="$job",instance=~"$instance"}, group)',
}


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels folded inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def graphs(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text: str = query["query"] if isinstance(query, dict) else query
    return text


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and of the query variables."""
    found = [t["expr"] for p in graphs(dashboard) for t in p["targets"]]
    found += [variable_query(v) for v in variables(dashboard).values() if v["type"] == "query"]
    return found


def test_the_dashboard_is_identified() -> None:
    dashboard = load()
    assert dashboard["uid"] == "schoolgate-agent"
    assert dashboard["title"] == "schoolgate agent"
    assert dashboard["schemaVersion"] == 39
    assert dashboard["tags"] == ["schoolgate", "dns"]


def test_the_template_variables() -> None:
    found = variables(load())
    assert set(found) >= {"datasource", *VARIABLES}
    source = found["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name, query in VARIABLES.items():
        variable = found[name]
        assert variable["type"] == "query", name
        assert variable_query(variable) == query, name
        assert variable["datasource"] == DATASOURCE, name
    for name in ("instance", "group"):
        assert found[name]["multi"] is True, name
        assert found[name]["includeAll"] is True, name


def test_every_panel_asks_the_chosen_source_about_the_chosen_job() -> None:
    dashboard = load()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Overview",
        "DNS",
        "Cache and upstreams",
        "Lists",
        "Activity and alerts",
        "Network",
    ]
    shown = graphs(dashboard)
    for panel in shown:
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel.get("description", "").strip(), title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert 'job="$job"' in target["expr"], title
            assert 'instance=~"$instance"' in target["expr"], title


def test_panels_do_not_overlap() -> None:
    dashboard = load()
    everything = list(panels(dashboard))
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in everything:
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0, panel["title"]
        assert x + w <= WIDTH, panel["title"]
        for column in range(x, x + w):
            for line in range(y, y + h):
                other = cells.setdefault((column, line), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


GROUPS = """
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]

[[groups]]
name = "guests"
age_tier = "guest"
default = true

[identity]
neighbours = false

[activity]
write_interval = 0.05

[metrics]
listen = "127.0.0.1:0"

[[lists]]
name = "harm"
category = "self-harm"
path = "{harm}"
"""


def ask(agent: AgentThread, name: str, source: str, qtype: str = "A") -> None:
    query = dns.message.make_query(name, qtype)
    dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)


def scraped_names(agent: AgentThread) -> set[str]:
    assert agent.agent is not None and agent.agent.metrics is not None
    host, port = agent.agent.metrics.address
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return {s.name for f in text_string_to_metric_families(response.text) for s in f.samples}


def test_every_metric_the_dashboard_names_is_exposed(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    harm = tmp_path / "harm.txt"
    harm.write_text("harm.example\n", encoding="utf-8")
    agent = make_agent(GROUPS.format(harm=harm))
    ask(agent, "www.example.org", "127.0.0.2")  # upstream
    ask(agent, "www.example.org", "127.0.0.2")  # cache
    ask(agent, "bad.example", "127.0.0.5")  # blocked: adult
    ask(agent, "harm.example", "127.0.0.2")  # blocked, and an alert
    assert agent.agent is not None
    activity = agent.agent.activity
    assert wait_for(lambda: activity.writer.written >= 4 and activity.alerts.raised)
    exposed = scraped_names(agent)

    named = {m for expr in expressions(load()) for m in METRIC.findall(expr)}
    assert {"schoolgate_dns_queries_total", "process_resident_memory_bytes"} <= named
    assert named - exposed == set()
