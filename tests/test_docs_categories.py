"""docs/categories.md stays true to the taxonomy: every category, its defaults and its names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from schoolgate.agent.config import parse
from schoolgate.agent.policy.categories import AgeTier, Tier, bundled

DOC = Path(__file__).resolve().parents[1] / "docs" / "categories.md"


def rows() -> dict[str, list[list[str]]]:
    """Table rows keyed by the category id in their first cell."""
    found: dict[str, list[list[str]]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([a-z0-9-]+)` \|", line)
        if match:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            found.setdefault(match.group(1), []).append(cells)
    return found


def test_every_category_has_its_defaults_names_and_alignment() -> None:
    documented = rows()
    for category in bundled():
        tables = documented.get(category.id)
        assert tables is not None and len(tables) == 3, category.id
        defaults, uksic, names = tables
        assert defaults[1:3] == [category.name(), category.tier.value]
        assert defaults[3:] == [f"`{category.defaults[a].value}`" for a in AgeTier]
        assert uksic[1] == category.uksic
        assert names[1:] == [category.name("en"), category.name("vi"), category.name("zh")]
    tiers = {t.value for t in Tier}
    assert set(documented) - tiers == set(bundled().categories)
    assert {t: len(documented[t]) for t in tiers} == dict.fromkeys(tiers, 1)


def test_the_locked_feed_example_is_a_valid_configuration(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- example: full -->\n```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    raw = tomllib.loads(block.group(1))
    local = tmp_path / "terrorism.txt"
    local.write_text("example.invalid\n", encoding="utf-8")
    raw_text = block.group(1).replace("/etc/schoolgate/licensed/terrorism.txt", str(local))
    config = parse(raw_text, "categories.md", base=tmp_path)
    assert {r.category for r in config.remote_lists if not r.catalogue} == {"child-abuse"}
    assert config.confidential("terrorism") and config.confidential("child-abuse")
    assert raw["lists"][0]["format"] == "urls"
