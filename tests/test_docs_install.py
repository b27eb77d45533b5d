"""docs/install.md and docs/upgrades.md stay true to install.py.

Every ``./install.py`` command line the pages show, in a code block or in inline code, is one
the installer's own parser takes, with whole flag names. The installed programs' commands in
their shell blocks are ones the programs take, and the links lead to headings that exist.

What the pages quote as the installer's output is in ```text blocks whose first line is a
``$ ... ./install.py ...`` command: the lines after such a command, up to the next ``$ `` line,
are what it printed. Each of them must be

- a line of a ``say(...)`` in install.py, an f-string's replacement fields standing for any text;
- one of its questions (``questions.text``, ``words`` or ``secret``), with the default shown in
  brackets and an answer after the colon; the questions of one run in the order install.py asks;
- a line printed by a command whose output the installer passes on (``config check``, ``lists
  update`` and ``lists compile``, ``migrate``), from the ``print(...)`` calls of those commands;
- ``...``, for lines left out, or empty.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

import install
from schoolgate.agent import cli as agent_cli
from schoolgate.server import cli as collector_cli

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = (DOCS / "install.md", DOCS / "upgrades.md")
INSTALLER = REPO / "install.py"
# The commands the installer runs and whose output it says again, by the functions that print
# it: the agent's config check and lists, the collector's config check and migrate.
ECHOED = {
    REPO / "schoolgate/agent/cli.py": ("_config_check",),
    REPO / "schoolgate/agent/cli_lists.py": ("compile_lists", "update_lists"),
    REPO / "schoolgate/server/cli.py": ("cmd_config_check", "cmd_migrate"),
}

_FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"\./install\.py\b(.*)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# The installed programs, run by their path in the virtual environment.
_PROGRAM = re.compile(r"/bin/(schoolgate-agent|schoolgate-collector)\b(.*)")
PARSERS = {
    "schoolgate-agent": agent_cli._parser,
    "schoolgate-collector": collector_cli.build_parser,
}


# --- What install.py says and asks ------------------------------------------------------------


def _pattern(node: ast.expr) -> str | None:
    """A string or f-string as a regular expression: a replacement field matches any text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            re.escape(part.value)
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
            else ".+"
            for part in node.values
        )
    if isinstance(node, ast.IfExp):
        body, orelse = _pattern(node.body), _pattern(node.orelse)
        return "|".join(f"(?:{p})" for p in (body, orelse) if p is not None) or None
    return None  # the output of a command, said again: see ECHOED


def _calls(path: Path, name: str, within: tuple[str, ...] = ()) -> list[ast.Call]:
    """The calls of ``name`` (a function or a method) in a file, or in its functions
    ``within``, in the file's order."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    scopes: list[ast.AST] = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in within
    ]
    assert len(scopes) == len(within), f"{path}: not all of {within} are there"
    found = [
        node
        for scope in scopes or [tree]
        for node in ast.walk(scope)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]
    return sorted(found, key=lambda node: (node.lineno, node.col_offset))


def said_lines() -> list[str]:
    """What install.py prints, and what the commands whose output it passes on print."""
    patterns = [_pattern(call.args[0]) for call in _calls(INSTALLER, "say") if call.args]
    for path, functions in ECHOED.items():
        patterns += [
            _pattern(call.args[0])
            for call in _calls(path, "print", functions)
            if call.args and not any(k.arg == "file" for k in call.keywords)
        ]
    return [p for p in patterns if p is not None]


@dataclass(frozen=True)
class Question:
    line: int  # in install.py: the order it is asked in
    function: str
    pattern: str


def questions() -> list[Question]:
    """Each question install.py asks, as the prompt ``Questions`` prints and an answer."""
    tree = ast.parse(INSTALLER.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "questions"
                and node.func.attr in ("text", "words", "secret")
            ):
                continue
            text = _pattern(node.args[0])
            assert text is not None, f"install.py:{node.lineno}: a question that is not a string"
            words = r" \(separated by spaces\)" if node.func.attr == "words" else ""
            pattern = rf"{text}{words}(?: \[.*\])?:(?: .*)?"
            found.append(Question(node.lineno, function.name, pattern))
    return sorted(found, key=lambda q: q.line)


# --- What the pages show ----------------------------------------------------------------------


def page_text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def command_lines(page: Path) -> list[str]:
    """The arguments of every ./install.py command on the page."""
    text = page_text(page)
    found = []
    for _language, body in _FENCE.findall(text):
        for line in body.replace("\\\n", " ").splitlines():
            found += [m.group(1) for m in _COMMAND.finditer(line)]
    outside = _FENCE.sub("", text)
    for code in _INLINE.findall(outside):
        found += [m.group(1) for m in _COMMAND.finditer(code)]
    return found


@dataclass(frozen=True)
class Transcript:
    command: str
    output: list[str]


def transcripts(page: Path) -> list[Transcript]:
    """The installer's runs the page quotes, with what each printed."""
    found = []
    for language, body in _FENCE.findall(page_text(page)):
        lines = body.rstrip("\n").split("\n")
        if language != "text" or not (lines[0].startswith("$ ") and _COMMAND.search(lines[0])):
            continue
        current: Transcript | None = None
        for line in lines:
            if line.startswith("$ "):
                current = Transcript(line, []) if _COMMAND.search(line) else None
                if current is not None:
                    found.append(current)
            elif current is not None:
                current.output.append(line)
    return found


# --- The tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_installer_command_is_one_it_takes(page: Path) -> None:
    parser = install.parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    commands = command_lines(page)
    assert commands, f"{page.name} shows no ./install.py command"
    for command in commands:
        words = shlex.split(command, comments=True)
        # Whole flags: argparse would take "--token" for "--token-file".
        unknown = [w for w in words if w.startswith("--") and w.partition("=")[0] not in flags]
        assert not unknown, f"{page.name}: ./install.py{command}: no such flag {unknown}"
        try:
            args = parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{page.name}: ./install.py{command}: the installer refuses it")
        assert args.uninstall or not args.purge, f"{page.name}: --purge without --uninstall"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_programs_commands_are_ones_they_take(page: Path) -> None:
    """The installed programs' commands the pages show (site add, site list), too."""
    for language, body in _FENCE.findall(page_text(page)):
        if language != "sh":
            continue
        for program, rest in _PROGRAM.findall(body):
            try:
                PARSERS[program]().parse_args(shlex.split(rest, comments=True))
            except SystemExit:
                pytest.fail(f"{page.name}: {program}{rest}: the program refuses it")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_what_the_installer_prints_is_what_it_says(page: Path) -> None:
    said = said_lines()
    asked = questions()
    runs = transcripts(page)
    assert runs, f"{page.name} quotes no run of the installer"
    for run in runs:
        assert any(line not in ("", "...") for line in run.output), run.command
        order = []
        for line in run.output:
            question = next((q for q in asked if re.fullmatch(q.pattern, line)), None)
            if question is not None:
                order.append(question.line)
                continue
            assert line in ("", "...") or any(re.fullmatch(p, line) for p in said), (
                f"{page.name}: after {run.command!r}: install.py never prints {line!r}"
            )
        assert order == sorted(order), f"{page.name}: {run.command!r} asks out of order"


def test_install_md_asks_every_question_of_the_agent_in_order() -> None:
    """The walk-through shows each of the agent's questions, as install.py asks them."""
    asked = [q for q in questions() if q.function in ("agent_answers", "read_token")]
    assert len(asked) >= 8
    shown = [
        line
        for run in transcripts(DOCS / "install.md")
        if " agent" in run.command
        for line in run.output
    ]
    matched = [
        next((i for i, line in enumerate(shown) if re.fullmatch(q.pattern, line)), -1)
        for q in asked
    ]
    missing = [q.pattern for q, index in zip(asked, matched, strict=True) if index < 0]
    assert not missing, f"docs/install.md does not show these questions: {missing}"
    assert matched == sorted(matched), "docs/install.md shows the questions out of order"


def test_the_patterns_are_not_vacuous() -> None:
    """A say() that were all replacement fields would match any line: none is."""
    said = said_lines()
    assert len(said) > 30
    assert not [p for p in said if re.fullmatch(p, "no such line in install.py at all")]
    assert any(
        re.fullmatch(p, "kept /etc/schoolgate/agent.toml as it is (--reconfigure writes it again)")
        for p in said
    )


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_to_pages_and_headings_that_exist(page: Path) -> None:
    links = [link for link in _LINK.findall(_FENCE.sub("", page_text(page))) if "://" not in link]
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        path = (page.parent / target) if target else page
        assert path.is_file(), f"{page.name}: {link}"
        if anchor:
            assert anchor in anchors(path), f"{page.name}: {link}"
