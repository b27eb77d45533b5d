"""docs/troubleshooting.md stays true to the code: every message it quotes is one the programs
can print, every command it shows is one their parsers accept, and its links, anchors and
metric names exist."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from schoolgate.agent import cli as agent_cli
from schoolgate.server import cli as collector_cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC = DOCS / "troubleshooting.md"
CODE = ROOT / "schoolgate"

# A fenced block, indented or not (inside a list item): its indent, language and body.
_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```$", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_METRIC = re.compile(r"\bschoolgate_[a-z0-9_]*[a-z0-9]\b(?![*_])")

# What the page writes for a value the program fills in: ``<file>``, ``<n>``, ``<reason>``.
_DOC_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
# What the code writes for one: %-formatting (logging, gettext) and str.format fields.
_PERCENT = r"%%|%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdrifgGeExXoc]"
_CODE_PLACEHOLDER = re.compile(_PERCENT)
_CODE_PLACEHOLDER_OR_FIELD = re.compile(_PERCENT + r"|\{[A-Za-z0-9_.!:\[\]]*\}")

PROGRAMS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "schoolgate-agent": agent_cli._parser,
    "schoolgate-collector": collector_cli.build_parser,
}
CONFIGS = {
    "schoolgate-agent": "/etc/schoolgate/agent.toml",
    "schoolgate-collector": "/etc/schoolgate/collector.toml",
}

Template = tuple[str, ...]  # the literal text between a message's placeholders


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    """The bodies of the page's fenced blocks in ``language``, unindented."""
    found = []
    for indent, lang, body in _FENCE.findall(doc_text()):
        if lang == language:
            found.append("\n".join(line[len(indent) :] for line in body.splitlines()))
    return found


def quoted_lines() -> list[str]:
    """Every line of every ``text`` block: each is one message the page quotes."""
    return [line for block in blocks("text") for line in block.splitlines() if line.strip()]


# --- the code's messages ------------------------------------------------------------------------


def _split(text: str, fields: bool) -> list[str]:
    """``text`` cut at its placeholders; ``%%`` is a literal ``%``."""
    pattern = _CODE_PLACEHOLDER_OR_FIELD if fields else _CODE_PLACEHOLDER
    segments = [""]
    position = 0
    for match in pattern.finditer(text):
        segments[-1] += text[position : match.start()]
        if match.group() == "%%":
            segments[-1] += "%"
        else:
            segments.append("")
        position = match.end()
    segments[-1] += text[position:]
    return segments


def _joined(node: ast.JoinedStr) -> list[str]:
    """An f-string's literal parts, with a break for every value it interpolates."""
    segments = [""]
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            first, *rest = _split(value.value, fields=False)
            segments[-1] += first
            segments.extend(rest)
        else:
            segments.append("")
    return segments


@cache
def templates() -> frozenset[Template]:
    """Every string the package's code holds, as the literal text between its placeholders.
    Adjacent literals are one string, as Python joins them; the literal parts of an f-string
    are not templates of their own."""
    found: set[Template] = set()
    for path in sorted(CODE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        inside: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                inside.update(id(value) for value in node.values)
            elif isinstance(node, ast.FormattedValue) and node.format_spec is not None:
                inside.add(id(node.format_spec))
        for node in ast.walk(tree):
            if id(node) in inside:
                continue
            if isinstance(node, ast.JoinedStr):
                found.add(tuple(_joined(node)))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(tuple(_split(node.value, fields=True)))
    # A string of placeholders and spaces alone ("{a} {b}") would let any words through.
    return frozenset(t for t in found if "".join(t).strip())


def _has_letters(text: str) -> bool:
    return re.search(r"[A-Za-z]", text) is not None


def _value(gap: str) -> bool:
    """Whether ``gap`` can stand for what one placeholder filled in, without another message:
    the page's own placeholders and punctuation, or one word or number with no space."""
    if not _has_letters(_DOC_PLACEHOLDER.sub("", gap)):
        return True
    return gap != "" and re.search(r"\s", gap) is None


_MAX_DEPTH = 4


@cache
def produced(text: str, depth: int = 0) -> bool:
    """Whether the code can print ``text``: some template matches it whole, each of its
    placeholders filled by a value or, recursively, by another message (an exception's text
    inside a log line)."""
    for template in templates():
        if depth == 0 and not _has_letters("".join(template)):
            continue
        if all(segment in text for segment in template) and _fits(template, text, depth):
            return True
    return False


def _fits(template: Template, text: str, depth: int) -> bool:
    first, *rest = template
    if not rest:
        return text == first
    return text.startswith(first) and _align(tuple(rest), text, len(first), depth)


def _gap(gap: str, depth: int) -> bool:
    return _value(gap) or (depth < _MAX_DEPTH and produced(gap, depth + 1))


def _align(rest: Template, text: str, position: int, depth: int) -> bool:
    """Whether ``text[position:]`` is a placeholder's value followed by ``rest``."""
    segment = rest[0]
    if len(rest) == 1:
        end = len(text) - len(segment)
        return end >= position and text.endswith(segment) and _gap(text[position:end], depth)
    start = position
    while (found := text.find(segment, start)) >= 0:
        if _gap(text[position:found], depth) and _align(
            rest[1:], text, found + len(segment), depth
        ):
            return True
        start = found + 1
    return False


def test_the_matcher_tells_real_messages_from_made_up_ones() -> None:
    real = (
        "every upstream failed for <name>, answered SERVFAIL (<errors>); 3 more like it not logged"
    )
    assert produced(real)
    assert produced("decision: block")
    assert not produced(real.removesuffix(" not logged"))
    assert not produced(real.replace("SERVFAIL", "from a friend"))
    assert not produced("schoolgate-agent: the moon is in the wrong phase")
    assert not produced("decision: block at once")


def test_the_page_quotes_messages() -> None:
    assert len(quoted_lines()) >= 30


@pytest.mark.parametrize("line", quoted_lines())
def test_every_quoted_message_is_one_the_code_prints(line: str) -> None:
    assert produced(line), f"no message in schoolgate/ reads: {line}"


# --- the commands -------------------------------------------------------------------------------


def _program(word: str) -> str | None:
    name = word.rsplit("/", 1)[-1]
    return name if name in PROGRAMS else None


def _commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(program, arguments) of each schoolgate command in shell ``text``: a simple command
    whose program is one of them, run directly or with ``sudo -u USER``. (A unit's name, as in
    ``systemctl status schoolgate-agent``, is not a command.)"""
    lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    simple: list[list[str]] = [[]]
    for word in lexer:
        if word and all(c in "|&;()<>" for c in word):
            simple.append([])
        else:
            simple[-1].append(word)
    for command in simple:
        words = command[3:] if command[:2] == ["sudo", "-u"] else command
        program = _program(words[0]) if words else None
        if program is not None:
            yield program, words[1:]


def shell_commands() -> list[tuple[str, list[str]]]:
    return [
        command
        for block in blocks("sh")
        for line in block.splitlines()
        for command in _commands(line)
    ]


def inline_commands() -> list[tuple[str, list[str]]]:
    """Commands written in the text, such as `schoolgate-agent lists update --force`."""
    prose = _FENCE.sub("", doc_text())
    found = []
    for span in _INLINE.findall(prose):
        if any(program in span for program in PROGRAMS):
            found += [(p, args) for p, args in _commands(span) if args]
    return found


def test_the_page_shows_commands_of_both_programs() -> None:
    shown = {(program, args[0]) for program, args in shell_commands() if args}
    assert {
        ("schoolgate-agent", "check"),
        ("schoolgate-agent", "config"),
        ("schoolgate-agent", "lists"),
        ("schoolgate-agent", "--version"),
        ("schoolgate-collector", "migrate"),
        ("schoolgate-collector", "user"),
    } <= shown


def _parse(program: str, args: list[str]) -> str:
    """What the parser says about ``args``: empty when it accepts them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            PROGRAMS[program]().parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue() or f"exit {exc.code}"
    return ""


@pytest.mark.parametrize(
    ("program", "args"),
    [*shell_commands(), *inline_commands()],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_every_command_is_accepted_by_its_program(program: str, args: list[str]) -> None:
    assert _parse(program, args) == "", f"{program} {shlex.join(args)}"


def test_a_refused_client_is_explained_as_the_page_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (program, args), *_ = [c for c in shell_commands() if "10.30.1.5" in c[1]]
    config = tmp_path / "agent.toml"
    config.write_text('[clients]\nnetworks = ["10.20.0.0/16"]\n', encoding="utf-8")
    run = [str(config) if arg == CONFIGS[program] else arg for arg in args]

    assert agent_cli.main([*run, "--state-dir", str(tmp_path / "state")]) == 0

    shown = next(b for b in blocks("text") if "outside the client networks" in b)
    assert capsys.readouterr().out.splitlines()[-2:] == shown.splitlines()


def test_every_shell_command_names_the_installed_configuration() -> None:
    """Without --config the programs read a bundled test configuration, not the school's."""
    for program, args in shell_commands():
        if args != ["--version"]:
            assert args[-2:] == ["--config", CONFIGS[program]], f"{program} {shlex.join(args)}"


# --- links and metrics --------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_lead_to_pages_and_headings_that_exist() -> None:
    links = [link for link in _LINK.findall(doc_text()) if "://" not in link]
    assert len(links) >= 20
    for link in links:
        page, _, anchor = link.partition("#")
        target = DOCS / page if page else DOC
        assert target.is_file(), link
        if anchor:
            assert anchor in anchors(target), link


def test_every_metric_named_is_one_the_programs_serve() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(CODE.rglob("*.py")))
    names = set(_METRIC.findall(_FENCE.sub("", doc_text())))
    assert len(names) >= 10
    for name in names:
        base = re.sub(r"_(total|bucket|info)$", "", name)
        assert f'"{name}"' in source or f'"{base}"' in source, name
