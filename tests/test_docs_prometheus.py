"""docs/prometheus/: the district's alerting rules load in Prometheus, pass their own tests,
name only metrics the programs serve, and are all in docs/prometheus.md's table."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.process import promtool

DOCS = Path(__file__).resolve().parents[1] / "docs"
RULES = DOCS / "prometheus" / "schoolgate-rules.yml"


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (./dev test takes it from Debian's prometheus)")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent
    )


def test_prometheus_loads_the_rules() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_the_rules_pass_their_tests() -> None:
    done = run_promtool("test", "rules", "schoolgate-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_only_metrics_that_are_served() -> None:
    documented = (DOCS / "monitoring.md").read_text() + (DOCS / "collector.md").read_text()
    used = set(re.findall(r"\b(schoolgate_[a-z_]+)\b", RULES.read_text()))
    assert used
    # A histogram or counter is documented by its family name.
    assert {name for name in used if f"`{name}`" not in documented} == set()


def test_every_rule_is_in_the_page() -> None:
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    page = (DOCS / "prometheus.md").read_text()
    assert alerts and all(f"| `{alert}` |" in page for alert in alerts)
