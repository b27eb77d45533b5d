"""docs/configuration.md stays true to the code: examples load, every key and default is there."""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schoolgate.agent import config as config_mod
from schoolgate.agent.config import (
    BlockPageSection,
    CacheSection,
    CategorySection,
    ClientsSection,
    ConfigError,
    FilterSection,
    GroupSection,
    IdentitySection,
    ListSection,
    PolicySection,
    ScheduleSection,
    ServerSection,
    SiteSection,
    SourcesSection,
    UpdatesSection,
    UpstreamSection,
    parse,
)
from schoolgate.agent.config_activity import (
    ActivitySection,
    AlertsSection,
    CollectorSection,
    MetricsSection,
    MonitorSection,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# The doc's heading for each section, and the class that defines its keys.
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "[server]": ServerSection,
    "[clients]": ClientsSection,
    "[upstream]": UpstreamSection,
    "[cache]": CacheSection,
    "[filter]": FilterSection,
    "[blockpage]": BlockPageSection,
    "[policy]": PolicySection,
    "[site]": SiteSection,
    "[[schedules]]": ScheduleSection,
    "[[groups]]": GroupSection,
    "[identity]": IdentitySection,
    "[[categories]]": CategorySection,
    "[[lists]]": ListSection,
    "[sources]": SourcesSection,
    "[updates]": UpdatesSection,
    "[activity]": ActivitySection,
    "[alerts]": AlertsSection,
    "[collector]": CollectorSection,
    "[metrics]": MetricsSection,
    "[monitor]": MonitorSection,
}

# What the doc's "Type" column says for each Python type of a key.
TYPE_WORDS = {int: "integer", float: "number", bool: "boolean", str: "string"}

_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```toml\n(.*?)```", re.DOTALL)
_TEXT_BLOCK = re.compile(r"```text\n(.*?)```", re.DOTALL)
_CLI_PREFIX = "schoolgate-agent: configuration error: "


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def examples(kind: str) -> list[tuple[str, int]]:
    """(TOML text, end offset in the doc) of every example marked ``kind``."""
    return [(m.group(2), m.end()) for m in _EXAMPLE.finditer(doc_text()) if m.group(1) == kind]


def write_referenced_files(text: str, base: Path) -> None:
    """Create the files a config refers to (list files, a CA file), relative to ``base``."""
    raw = tomllib.loads(text)
    paths = [entry["path"] for entry in raw.get("lists", []) if "path" in entry]
    for table, key in (("upstream", "tls_ca_file"), ("collector", "token_file")):
        named = raw.get(table, {}).get(key)
        if named:
            paths.append(named)
    for name in paths:
        assert not Path(name).is_absolute(), f"use paths relative to the config: {name}"
        target = base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("example.invalid\n", encoding="utf-8")


def section(heading: str) -> str:
    """The doc text from ``## heading`` up to the next ``## `` heading."""
    text = doc_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.DOTALL)
    assert match is not None, f"no '## {heading}' section in {DOC.name}"
    return match.group(1)


def key_rows(heading: str) -> dict[str, dict[str, str]]:
    """The rows of the key table of a section: key name -> {column header: cell}."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in section(heading).splitlines():
        if not line.startswith("|"):
            if rows:
                break
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells[0]) <= set("-: "):
            continue
        name = re.fullmatch(r"`(\w+)`", cells[0])
        if header[0] == "Key" and name is not None:
            rows[name.group(1)] = dict(zip(header, cells, strict=True))
    return rows


def default_of(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def type_word(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "string"
    if typing.get_origin(tp) is dict:
        return "table"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        # None stands for a key left out (TOML has no null): not a type a user can write.
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return " or ".join(type_word(arg) for arg in args)
    if typing.get_origin(tp) is list:
        return "list of " + TYPE_WORDS[typing.get_args(tp)[0]] + "s"
    return TYPE_WORDS[tp]


def all_fields() -> list[tuple[str, msgspec.structs.FieldInfo]]:
    return [
        (heading, field)
        for heading, cls in SECTIONS.items()
        for field in msgspec.structs.fields(cls)
    ]


def field_id(item: tuple[str, msgspec.structs.FieldInfo]) -> str:
    return f"{item[0]}.{item[1].name}"


def test_every_toml_block_is_marked() -> None:
    marked = len(_EXAMPLE.findall(doc_text()))
    assert marked == doc_text().count("```toml"), "mark every TOML block with an example comment"
    assert len(examples("full")) >= 2


@pytest.mark.parametrize("index", range(len(examples("full"))))
def test_full_example_is_accepted(index: int, tmp_path: Path) -> None:
    text, _ = examples("full")[index]
    write_referenced_files(text, tmp_path)
    (tmp_path / "example.toml").write_text(text, encoding="utf-8")

    config = parse(text, "example.toml", base=tmp_path)

    for entry in config.lists:
        assert entry.path.is_file()


def test_school_example_has_what_the_doc_promises(tmp_path: Path) -> None:
    school = next(text for text, _ in examples("full") if "10.21.0.0/16" in text)
    write_referenced_files(school, tmp_path)
    config = parse(school, "example.toml", base=tmp_path)
    assert {str(n) for n in config.client_networks} >= {"10.20.0.0/16", "10.21.0.0/16", "fd00::/8"}
    assert all(u.scheme == "tls" and u.tls_name for u in config.upstreams)
    assert ("127.0.0.1", 53) in config.listen
    assert any(entry.format == "hosts" for entry in config.lists)


@pytest.mark.parametrize("index", range(len(examples("invalid"))))
def test_invalid_example_gives_the_documented_message(index: int, tmp_path: Path) -> None:
    text, end = examples("invalid")[index]
    shown = _TEXT_BLOCK.search(doc_text(), end)
    assert shown is not None, "an invalid example is followed by the message it gives"

    with pytest.raises(ConfigError) as exc_info:
        parse(text, "agent.toml", base=tmp_path)

    assert f"{_CLI_PREFIX}{exc_info.value}\n" in shown.group(1)


@pytest.mark.parametrize("item", all_fields(), ids=field_id)
def test_every_key_is_documented(item: tuple[str, msgspec.structs.FieldInfo]) -> None:
    heading, field = item
    assert f"`{field.name}`" in doc_text()
    assert field.name in key_rows(heading), f"no table row for {field_id(item)}"


@pytest.mark.parametrize("item", all_fields(), ids=field_id)
def test_documented_type_and_default_match_the_code(
    item: tuple[str, msgspec.structs.FieldInfo],
) -> None:
    heading, field = item
    row = key_rows(heading)[field.name]
    assert row["Type"] == type_word(field.type)
    if field.required:
        assert row["Default"] == "required"
        return
    default = default_of(field)
    if default is None:
        # Left out, the key follows something else (another key, the age tier): said in words.
        assert row["Default"] not in ("", "required"), f"say what {field_id(item)} follows"
        return
    stated = re.match(r"`([^`]*)`", row["Default"])
    if stated is None:
        # Only a long list may be described in words; its items are checked below.
        assert isinstance(default, list), f"state the default of {field_id(item)} as `TOML`"
        return
    value = tomllib.loads(f"value = {stated.group(1)}")["value"]
    assert value == default
    assert type(value) is type(default)


def test_default_client_networks_are_listed() -> None:
    text = section("[clients]")
    for network in config_mod._PRIVATE_NETWORKS:
        assert f"`{network}`" in text


def test_bundled_default_matches_the_doc() -> None:
    bundled = tomllib.loads(
        (Path(config_mod.__file__).parent.parent / "filter_lists" / "default.toml").read_text(
            encoding="utf-8"
        )
    )
    text = doc_text()
    for address in bundled["server"]["listen"]:
        assert f"`{address}`" in text
    for network in bundled["clients"]["networks"]:
        assert f"`{network}`" in text
    assert f"`{bundled['policy']['age_tier']}`" in text
