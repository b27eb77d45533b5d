"""docs/filtering.md stays true to the code: its configurations load with the agent's loader,
the decisions it claims for the example school are the decision code's, and the commands it
shows print what it says they print."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schoolgate.agent import cli
from schoolgate.agent.app import client_identifier
from schoolgate.agent.config import AgentConfig, load
from schoolgate.agent.dns.wire import name_labels, text_to_wire, wire_to_text
from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.lists import list_sources
from schoolgate.agent.policy.categories import AgeTier
from schoolgate.agent.policy.categories import bundled as bundled_taxonomy
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.identity import read_devices
from schoolgate.agent.policy.safesearch import bundled as bundled_safesearch
from schoolgate.agent.policy.schedules import active_schedules
from tests.agent.test_docs_configuration import write_referenced_files

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC = DOCS / "filtering.md"

# Where the doc says the configuration lives, and the lease file it names.
DOC_DIR = "/etc/schoolgate"
DOC_CONFIG = f"{DOC_DIR}/agent.toml"
DOC_LEASES = "/var/lib/misc/dnsmasq.leases"
DOC_STATE = "/var/lib/schoolgate"

# What the school's DHCP server has leased, as the doc's outputs show it (dnsmasq's format;
# an expiry of 0 never ends): a class iPad and the head's laptop, both on the pupils' Wi-Fi.
LEASES = (
    "0 3c:22:fb:aa:bb:01 10.20.2.40 ks1-ipad-07 01:3c:22:fb:aa:bb:01\n"
    "0 3c:22:fb:10:20:30 10.20.3.17 head-laptop 01:3c:22:fb:10:20:30\n"
)

PUPIL = "10.20.2.31"  # a Key Stage 2 laptop on the pupils' Wi-Fi
IPAD = "10.20.2.40"  # ks1-ipad-07, on the same Wi-Fi
HEAD = "10.20.3.17"  # the head's laptop, on the pupils' Wi-Fi
TEACHER = "10.20.9.20"  # the staff network
VISITOR = "10.20.50.8"  # the guest Wi-Fi

WEDNESDAY = dt.date(2026, 11, 25)

_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```toml\n(.*?)```", re.DOTALL)
_FILE = re.compile(r"<!-- file: (\S+) -->\n```text\n(.*?)```", re.DOTALL)
_TEXT = re.compile(r"```text\n(.*?)```", re.DOTALL)
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_LOCKED_EDIT = 'schedules = { lunch = { games = "allow", terrorism = "allow" } }'


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def examples(kind: str = "full") -> list[str]:
    return [m.group(2) for m in _EXAMPLE.finditer(doc_text()) if m.group(1) == kind]


def school_text() -> str:
    """The worked example: the configuration with the school's groups."""
    return next(text for text in examples() if 'name = "ks2"' in text)


def at(day: dt.date, time: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(time))


def write_example(text: str, directory: Path) -> Path:
    """The configuration as ``agent.toml`` in ``directory``, with the files it names: those the
    doc shows in full, others as a placeholder; the lease file in ``directory`` too."""
    directory.mkdir(parents=True, exist_ok=True)
    write_referenced_files(text, directory)
    for name, content in _FILE.findall(doc_text()):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(content, encoding="utf-8")
    leases = directory / "dnsmasq.leases"
    leases.write_text(LEASES, encoding="utf-8")
    path = directory / "agent.toml"
    path.write_text(text.replace(DOC_LEASES, str(leases)), encoding="utf-8")
    return path


def load_example(path: Path, state: Path) -> AgentConfig:
    def keep_state_here(raw: dict[str, Any]) -> None:
        raw.setdefault("server", {})["state_dir"] = str(state)

    return load(path, keep_state_here)


# --- every example loads ------------------------------------------------------------------------


def test_every_toml_block_is_a_full_example() -> None:
    assert examples(), "the page has at least the example school"
    assert len(_EXAMPLE.findall(doc_text())) == doc_text().count("```toml")
    assert examples() == [m.group(2) for m in _EXAMPLE.finditer(doc_text())], "all 'full'"


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_loads_with_the_agents_loader(index: int, tmp_path: Path) -> None:
    path = write_example(examples()[index], tmp_path / "etc")

    config = load_example(path, tmp_path / "state")

    assert config.config_file == path
    assert sum(1 for g in config.groups if g.default) == 1
    for entry in config.lists:
        assert entry.path.is_file()


# --- the example school's groups and decisions --------------------------------------------------


@pytest.fixture
def school(tmp_path: Path) -> AgentConfig:
    return load_example(write_example(school_text(), tmp_path / "etc"), tmp_path / "state")


@pytest.fixture
def lists(school: AgentConfig, tmp_path: Path) -> Iterator[CompiledLists]:
    out = tmp_path / "build.sgl"
    build(list_sources(school), out)
    compiled = CompiledLists(out)
    try:
        yield compiled
    finally:
        compiled.close()


def group_of(config: AgentConfig, address: str, moment: dt.datetime) -> Group | None:
    """The group a device is served as at ``moment``, as the agent builds it; None: refused."""
    devices = read_devices(False, config.identity.lease_files)
    active = active_schedules(config.schedules, moment)
    client = client_identifier(config, devices, active).identify(address)
    return None if client is None else client.group


def decide(
    config: AgentConfig, lists: CompiledLists, address: str, name: str, moment: dt.datetime
) -> Decision:
    group = group_of(config, address, moment)
    assert group is not None, f"{address} is refused"
    wire = text_to_wire(name)
    return Decider(lists, config.taxonomy).explain(group, wire, name_labels(wire))


@pytest.mark.parametrize(
    ("address", "group"),
    [
        (PUPIL, "ks2"),
        (IPAD, "ks1"),  # by its DHCP name, though its address is the pupils' Wi-Fi
        (HEAD, "staff"),  # by its MAC address, on the pupils' Wi-Fi
        (TEACHER, "staff"),
        (VISITOR, "guests"),  # no group claims it
        ("127.0.0.1", "guests"),  # the box itself
        ("192.168.1.5", None),  # outside the client networks: refused
    ],
)
def test_each_device_lands_in_the_group_the_page_says(
    school: AgentConfig, address: str, group: str | None
) -> None:
    found = group_of(school, address, at(WEDNESDAY, "10:00"))
    assert (found.name if found is not None else None) == group


@pytest.mark.parametrize(
    ("address", "name", "moment", "action", "category"),
    [
        # Key Stage 2: games at lunch only, Monday to Friday; the end of a window is not in it.
        (PUPIL, "roblox.com", at(WEDNESDAY, "10:00"), Action.BLOCK, "games"),
        (PUPIL, "roblox.com", at(WEDNESDAY, "12:15"), Action.ALLOW, "games"),
        (PUPIL, "roblox.com", at(WEDNESDAY, "12:30"), Action.ALLOW, "games"),
        (PUPIL, "roblox.com", at(WEDNESDAY, "13:15"), Action.BLOCK, "games"),
        (PUPIL, "roblox.com", at(dt.date(2026, 11, 28), "12:30"), Action.BLOCK, "games"),
        # The school's own shopping list: blocked for pupils, open to staff.
        (PUPIL, "www.amazon.co.uk", at(WEDNESDAY, "12:30"), Action.BLOCK, "shopping"),
        (TEACHER, "amazon.co.uk", at(WEDNESDAY, "10:00"), Action.ALLOW, "shopping"),
        # Staff: no social media in the school day; after hours (overnight) and at weekends.
        (TEACHER, "tiktok.com", at(WEDNESDAY, "10:00"), Action.BLOCK, "social"),
        (TEACHER, "tiktok.com", at(WEDNESDAY, "16:30"), Action.ALLOW, "social"),
        (TEACHER, "tiktok.com", at(dt.date(2026, 11, 26), "07:00"), Action.ALLOW, "social"),
        (TEACHER, "tiktok.com", at(dt.date(2026, 11, 26), "07:30"), Action.BLOCK, "social"),
        (TEACHER, "tiktok.com", at(dt.date(2026, 11, 28), "11:00"), Action.ALLOW, "social"),
        (HEAD, "tiktok.com", at(WEDNESDAY, "10:00"), Action.BLOCK, "social"),
        # VPNs are blocked for every group, staff included (their tier would only alert).
        (TEACHER, "nordvpn.com", at(WEDNESDAY, "10:00"), Action.BLOCK, "proxy-vpn"),
        (VISITOR, "nordvpn.com", at(WEDNESDAY, "10:00"), Action.BLOCK, "proxy-vpn"),
        # Guests get the guest tier: games are theirs.
        (VISITOR, "roblox.com", at(WEDNESDAY, "10:00"), Action.ALLOW, "games"),
    ],
)
def test_the_school_decides_as_the_page_says(
    school: AgentConfig,
    lists: CompiledLists,
    address: str,
    name: str,
    moment: dt.datetime,
    action: Action,
    category: str,
) -> None:
    decision = decide(school, lists, address, name, moment)
    assert (decision.action, decision.category) == (action, category)


def test_linkedin_is_let_through_for_staff_by_their_allow_list(
    school: AgentConfig, lists: CompiledLists
) -> None:
    decision = decide(school, lists, TEACHER, "www.linkedin.com", at(WEDNESDAY, "10:00"))
    assert (decision.action, decision.rule, decision.entry) == (
        Action.ALLOW,
        "allow list",
        "linkedin.com",
    )
    # The list is the staff's alone: linkedin.com is a social network for everyone else.
    visitor = decide(school, lists, VISITOR, "linkedin.com", at(WEDNESDAY, "10:00"))
    assert visitor.category == "social"
    assert decide(school, lists, PUPIL, "linkedin.com", at(WEDNESDAY, "10:00")).blocked


@pytest.mark.parametrize(
    ("address", "name", "target"),
    [
        (PUPIL, "www.google.com", "forcesafesearch.google.com."),
        (PUPIL, "www.bing.com", "strict.bing.com."),
        (PUPIL, "www.youtube.com", "restrict.youtube.com."),
        (IPAD, "www.youtube.com", "restrict.youtube.com."),
        (TEACHER, "www.google.com", "forcesafesearch.google.com."),  # safesearch = true
        (TEACHER, "www.youtube.com", None),  # the staff tier's YouTube: off
        (VISITOR, "www.youtube.com", "restrictmoderate.youtube.com."),
        ("127.0.0.1", "www.google.com", "forcesafesearch.google.com."),
        (PUPIL, "mail.google.com", None),  # names match exactly
    ],
)
def test_safe_search_leads_each_group_where_the_page_says(
    school: AgentConfig, lists: CompiledLists, address: str, name: str, target: str | None
) -> None:
    decision = decide(school, lists, address, name, at(WEDNESDAY, "10:00"))
    assert not decision.blocked
    assert (wire_to_text(decision.rewrite) if decision.rewrite else None) == target


def test_the_engine_table_matches_the_bundled_one() -> None:
    table = bundled_safesearch()
    text = doc_text()
    for engine in table.engines.values():
        for target in engine.targets.values():
            assert f"`{target}`" in text, target
    for engine_id in table.search_engines:
        assert f"| `{engine_id}` |" in text, engine_id
    for name in table.engines["youtube"].names:
        assert f"`{name}`" in text, name


# --- the age tiers' summary ---------------------------------------------------------------------

_ALWAYS_BLOCKED = (
    "child-abuse",
    "terrorism",
    "malware",
    "phishing",
    "piracy",
    "encrypted-dns",
    "adult",
    "gambling",
    "drugs",
    "violence",
    "dating",
)
_PRODUCTIVITY = ("social", "chat", "games", "streaming", "genai")


def tier_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in doc_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0] in {t.value for t in AgeTier}:
            rows[cells[0]] = cells
    return rows


def test_the_age_tier_summary_matches_the_taxonomy() -> None:
    taxonomy = bundled_taxonomy()
    defaults = bundled_safesearch().defaults
    rows = tier_rows()
    assert set(rows) == {t.value for t in AgeTier}
    for tier in AgeTier:
        actions = taxonomy.actions(tier)
        _tier, _who, productivity, shopping, self_harm, vpn, safesearch, youtube = rows[tier]
        assert {actions[c].value for c in _PRODUCTIVITY} == {productivity}, tier
        assert actions["shopping"].value == shopping, tier
        assert actions["self-harm"].value == self_harm, tier
        assert actions["proxy-vpn"].value == vpn, tier
        assert ("on" if defaults[tier].safesearch else "off") == safesearch, tier
        assert defaults[tier].youtube.value == youtube, tier
        # "Whatever the tier ... are blocked, and extremism is blocked with an alert."
        assert all(actions[c] is Action.BLOCK for c in _ALWAYS_BLOCKED), tier
        assert actions["extremism"] is Action.BLOCK_ALERT, tier


# --- what the commands print --------------------------------------------------------------------


def test_allowing_a_locked_category_is_refused_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = school_text()
    assert 'schedules = { lunch = { games = "allow" } }' in text
    assert f"`{_LOCKED_EDIT}`" in doc_text(), "the page shows the edit it explains"
    bad = text.replace('schedules = { lunch = { games = "allow" } }', _LOCKED_EDIT)
    path = write_example(bad, tmp_path)

    code = cli.main(["config", "check", "--config", str(path), "--state-dir", str(tmp_path / "s")])

    assert code == 2
    error = capsys.readouterr().err.replace(str(path), DOC_CONFIG)
    assert error.startswith("schoolgate-agent: configuration error: ")
    shown = [block for block in _TEXT.findall(doc_text()) if "is a locked category" in block]
    assert shown == [error], "the page shows what config check prints, word for word"


def shell_examples() -> list[tuple[list[str], list[str]]]:
    """(arguments, lines shown) of every ``$ schoolgate-agent ...`` command in a text block."""
    found: list[tuple[list[str], list[str]]] = []
    for block in _TEXT.findall(doc_text()):
        current: list[str] | None = None
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("$ "):
                args = shlex.split(line[2:])
                current = args[1:] if args[0] == "schoolgate-agent" else None
                if current is not None:
                    found.append((current, []))
            elif current is not None:
                found[-1][1].append(line)
    return found


def normalize(line: str) -> str:
    """What changes from run to run, or from machine to machine, made the same."""
    line = re.sub(r"\(\S*/schoolgate/filter_lists/lists/", "(BUNDLED/", line)
    line = re.sub(r"build \S+, \d+ names", "build ID, N names", line)
    line = re.sub(r"exception [0-9a-f]+:", "exception ID:", line)
    return re.sub(r"until \d{4}-\d\d-\d\d \d\d:\d\d \S+", "until TIME", line)


def in_order(shown: list[str], printed: list[str]) -> bool:
    """Whether the lines shown appear in what was printed, in order ('...' skips lines)."""
    rest = iter(printed)
    return all(any(line == seen for seen in rest) for line in shown if line.strip() != "...")


def test_the_page_shows_commands() -> None:
    commands = {tuple(args[:2]) for args, _ in shell_examples()}
    assert {("check", "--config"), ("policy", "show"), ("policy", "test")} <= commands
    assert any(args[0] == "allow" and "--device" in args for args, _ in shell_examples())


@pytest.mark.parametrize("index", range(len(shell_examples())))
def test_a_command_prints_what_the_page_shows(
    index: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, shown = shell_examples()[index]
    assert DOC_CONFIG in args, "every command is run on the example school"
    config = write_example(school_text(), tmp_path / "etc")
    state = tmp_path / "state"
    assert cli.main(["lists", "compile", "--config", str(config), "--state-dir", str(state)]) == 0
    capsys.readouterr()
    if args[0] == "allow":
        state = tmp_path / "exceptions"  # granted elsewhere: the decisions above stay as shown
    run = [str(config) if arg == DOC_CONFIG else arg for arg in args]

    code = cli.main([*run, "--state-dir", str(state)])

    out = capsys.readouterr().out
    printed = [
        normalize(line.replace(str(state), DOC_STATE).replace(str(config.parent), DOC_DIR))
        for line in out.splitlines()
    ]
    expected = [normalize(line) for line in shown]
    # policy test fails (4) for the categories fed only by downloads, not made here.
    assert code in ((0, 4) if args[:2] == ["policy", "test"] else (0,))
    if "..." in (line.strip() for line in expected):
        assert in_order(expected, printed), "\n".join(printed)
    else:
        assert printed == expected


# --- links --------------------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_lead_to_pages_and_headings_that_exist() -> None:
    links = [link for link in _LINK.findall(doc_text()) if "://" not in link]
    assert links
    for link in links:
        page, _, anchor = link.partition("#")
        target = DOCS / page if page else DOC
        assert target.is_file(), link
        if anchor:
            assert anchor in anchors(target), link
