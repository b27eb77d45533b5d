"""The examples of docs/district-policy.md are documents the collector accepts, and the
merged policy is one the agent accepts."""

from __future__ import annotations

import re
from pathlib import Path

from schoolgate.server.policy_documents import check_policy, merge, read_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "district-policy.md"
_EXAMPLE = re.compile(r"<!-- example: policy -->\n```toml\n(.*?)```", re.DOTALL)


def test_the_district_and_school_examples_make_a_policy_the_agent_accepts() -> None:
    district_text, school_text = _EXAMPLE.findall(DOC.read_text(encoding="utf-8"))
    district = read_document(district_text, "district example")
    check_policy(district, "district example", district_text, district)
    merged = merge(district, read_document(school_text, "school example"))
    check_policy(merged, "merged example")
    pupils = next(g for g in merged["groups"] if g["name"] == "pupils")
    assert pupils["allow"] == ["scratch.mit.edu"]
    assert pupils["actions"] == {"social": "block"}
    assert [g["name"] for g in merged["groups"]] == ["staff", "pupils", "ict-suite"]
