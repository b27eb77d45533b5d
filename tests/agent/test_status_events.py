"""A policy test too large for the collector keeps what a reviewer must see."""

from __future__ import annotations

from typing import Any

import msgspec

from schoolgate.agent.status_events import fitted


def report(ok: int, mismatches: int) -> dict[str, Any]:
    results = [
        {"group": f"g{i}", "category": "games", "result": "ok", "note": ""} for i in range(ok)
    ] + [
        {"group": f"g{i}", "category": "games", "result": "mismatch", "note": "not in lists"}
        for i in range(mismatches)
    ]
    summary = {"checks": ok + mismatches, "mismatches": mismatches, "passed": not mismatches}
    return {"at": "2026-11-25 10:00", "results": results, "summary": summary}


def size(data: dict[str, Any]) -> int:
    return len(msgspec.json.encode(data))


def test_a_report_within_the_limit_is_sent_whole() -> None:
    data = report(ok=20, mismatches=2)
    assert fitted(data, size(data)) is data


def test_over_the_limit_only_the_results_that_are_not_ok_are_sent() -> None:
    data = report(ok=200, mismatches=3)
    limit = size(report(ok=0, mismatches=3)) + 10  # the summary counts differ a little
    sent = fitted(data, limit)
    assert [r["result"] for r in sent["results"]] == ["mismatch"] * 3
    assert sent["summary"] == data["summary"] and sent["at"] == data["at"]
    assert size(sent) <= limit
    assert len(data["results"]) == 203  # the caller's data is left as it was


def test_when_even_those_do_not_fit_the_summary_goes_alone() -> None:
    data = report(ok=10, mismatches=100)
    sent = fitted(data, size(report(ok=0, mismatches=0)) + 10)
    assert sent["results"] == [] and sent["summary"]["mismatches"] == 100
