"""The files that ship in filter_lists/: lists, catalogue and SafeSearch table are sound."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from schoolgate.agent.filter import catalogue
from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.filter.parsers import ListFormat, ParseReport, parse_lines
from schoolgate.agent.policy.categories import bundled as taxonomy

PACKAGE = Path(str(resources.files("schoolgate.filter_lists")))
LIST_FILES = sorted((PACKAGE / "lists").glob("*.txt"))
# Parent domains that would take out far more than one service if a list ever held them.
NEVER = {
    "google.com",
    "microsoft.com",
    "amazon.com",
    "apple.com",
    "bing.com",
    "baidu.com",
    "qq.com",
    "youtube.com",
    "googleapis.com",
    "gstatic.com",
    "cloudflare.com",
    "akamaized.net",
    "github.com",
    "github.io",
    "minecraft.net",
    "bbc.co.uk",
    "wikipedia.org",
}


def entries(path: Path) -> list[str]:
    report = ParseReport()
    names = list(
        parse_lines(path.read_text(encoding="utf-8").splitlines(), ListFormat.DOMAINS, report)
    )
    assert report.invalid == 0 and report.unsupported == 0, report.examples
    return names


def test_there_are_bundled_lists() -> None:
    assert {p.stem for p in LIST_FILES} >= {
        "encrypted-dns",
        "vpn-proxy",
        "genai",
        "social",
        "chat",
        "games",
        "streaming",
    }


@pytest.mark.parametrize("path", LIST_FILES, ids=lambda p: p.stem)
def test_a_bundled_list_is_clean(path: Path) -> None:
    names = entries(path)
    assert len(names) >= 20
    assert len(names) == len(set(names)), "duplicates"
    assert not set(names) & NEVER
    listed = set(names)
    for name in names:
        # An entry already covered by a shorter one in the same list is dead weight.
        labels = name.split(".")
        parents = {".".join(labels[i:]) for i in range(1, len(labels))}
        assert not parents & listed, f"{name} is covered by {parents & listed}"
    assert path.read_text(encoding="utf-8").startswith("#"), "a header says what the list is"


def test_the_catalogue_is_sound() -> None:
    known = taxonomy()
    sources = catalogue.bundled()
    assert len(sources) >= 20
    files = set()
    for s in sources.values():
        assert s.category in known, s.id
        assert not known[s.category].locked, "locked categories are fed by licensed feeds only"
        assert s.checked, s.id
        if s.default:
            assert s.licence and s.attribution, s.id
        if s.file:
            assert (PACKAGE / s.file).is_file(), s.id
            files.add(Path(s.file).stem)
        else:
            assert s.url.startswith("https://"), s.id
        if s.format is ListFormat.UT1:
            assert s.member.endswith("/domains"), s.id
            assert s.url.endswith(".tar.gz"), s.id
    # Every bundled list is offered, and on by default.
    assert files == {p.stem for p in LIST_FILES}
    assert all(s.default for s in sources.values() if s.file)


def test_required_catalogue_projects_are_present() -> None:
    urls = " ".join(s.url for s in catalogue.bundled().values())
    assert "dsi.ut-capitole.fr/blacklists" in urls
    assert "blocklistproject" in urls
    assert "StevenBlack/hosts" in urls


def test_the_safesearch_table_is_sound() -> None:
    table = tomllib.loads((PACKAGE / "safesearch.toml").read_text(encoding="utf-8"))
    engines = {e["id"]: e for e in table["engine"]}
    assert {"google", "bing", "duckduckgo", "youtube"} <= set(engines)
    assert set(engines["youtube"]["targets"]) == {"strict", "moderate"}
    seen: set[str] = set()
    for engine in engines.values():
        assert re.fullmatch(r"[a-z0-9-]+", engine["id"])
        assert "strict" in engine["targets"]
        for host in [*engine["names"], *engine["targets"].values()]:
            try:
                assert normalize(host) == host
            except InvalidName as exc:  # pragma: no cover - the assertion message
                pytest.fail(f"{engine['id']}: {host!r}: {exc}")
        assert not set(engine["names"]) & seen, "a name rewritten by two engines"
        seen |= set(engine["names"])
        for target in engine["targets"].values():
            assert target not in engine["names"], "a target must not rewrite itself"
    assert {"www.google.com", "www.google.co.uk", "google.de"} <= set(engines["google"]["names"])


def test_every_probe_is_a_name_in_its_categorys_lists() -> None:
    sources = catalogue.bundled().values()
    probed = [c for c in taxonomy() if c.probe]
    assert len(probed) >= 10
    for category in probed:
        assert normalize(category.probe) == category.probe, category.id
        assert not category.locked, "locked lists are confidential: sites bring their own probe"
        mine = [s for s in sources if s.category == category.id]
        # A list a school must turn on first would make every default check fail.
        assert any(s.default for s in mine), category.id
        for s in mine:
            if s.file:
                labels = category.probe.split(".")
                covering = {".".join(labels[i:]) for i in range(len(labels) - 1)}
                assert covering & set(entries(PACKAGE / s.file)), (category.id, s.file)


def test_the_categories_doc_names_every_probe() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "categories.md").read_text("utf-8")
    for category in taxonomy():
        if category.probe:
            assert f"`{category.id}`: `{category.probe}`" in doc, category.id


def test_the_lists_doc_names_every_default_source() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "lists.md").read_text(encoding="utf-8")
    for s in catalogue.bundled().values():
        if s.default and not s.file:
            assert f"`{s.id}`" in doc, s.id
