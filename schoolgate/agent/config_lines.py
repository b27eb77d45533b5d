"""Where a key is written in a TOML file, so a configuration error can name the line.

The TOML reader gives values, not positions. This reads the text again line by line, following
table headers (``[policy]``, ``[[groups]]`` counted from zero, ``[groups.actions]``) and keys
(bare, quoted or dotted), and finds the line that writes a key such as
``groups[1].actions.terrorism``: the key itself, the inline table or array holding it, or, for a
key the file leaves out, the header of its table. It is a help for the reader of an error, not
a parser: when the file does not show the key (a command-line flag set it) there is no line.
"""

from __future__ import annotations

import re
from typing import Final

Path = list[str | int]

_ARRAY_HEADER: Final = re.compile(r"^\s*\[\[\s*(.+?)\s*\]\]\s*(?:#.*)?$")
_TABLE_HEADER: Final = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_NAME: Final = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY_LINE: Final = re.compile(rf"^\s*({_NAME}(?:\s*\.\s*{_NAME})*)\s*=(.*)$")
_PART: Final = re.compile(rf"\s*({_NAME})\s*(?:\.|$)")
_INDEX: Final = re.compile(r"^(.*?)\[(\d+)\]$")


def key_path(key: str) -> Path:
    """'groups[1].actions.terrorism' -> ['groups', 1, 'actions', 'terrorism']."""
    path: Path = []
    for part in key.split("."):
        name = part
        indexes: list[int] = []
        while (m := _INDEX.match(name)) is not None:
            name = m.group(1)
            indexes.insert(0, int(m.group(2)))
        if name:
            path.append(name)
        path.extend(indexes)
    return path


def _dotted(text: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(text)]


def key_line(text: str, key: str) -> int | None:
    """The 1-based line of ``text`` that writes ``key``, or None when the file does not."""
    want = key_path(key)
    if not want:
        return None
    counts: dict[tuple[str, ...], int] = {}
    table: Path = []
    best: tuple[int, int] | None = None  # (score, line)
    for number, line in enumerate(text.splitlines(), start=1):
        found: Path | None = None
        value = ""
        if m := _ARRAY_HEADER.match(line):
            names = tuple(_dotted(m.group(1)))
            index = counts.get(names, 0)
            counts[names] = index + 1
            table = [*_resolve(list(names[:-1]), counts), names[-1], index]
            found = table
        elif m := _TABLE_HEADER.match(line):
            table = _resolve(_dotted(m.group(1)), counts)
            found = table
        elif m := _KEY_LINE.match(line):
            found = [*table, *_dotted(m.group(1))]
            value = m.group(2)
        if found is None:
            continue
        score = _score(found, want, value)
        if score and (best is None or score > best[0]):
            best = (score, number)
    return best[1] if best is not None else None


def _resolve(names: list[str], counts: dict[tuple[str, ...], int]) -> Path:
    """A dotted header's path, with the index of the latest entry of each array of tables it
    passes through: ``[groups.actions]`` belongs to the last ``[[groups]]``."""
    path: Path = []
    for i, name in enumerate(names):
        path.append(name)
        seen = counts.get(tuple(names[: i + 1]))
        if seen:
            path.append(seen - 1)
    return path


def _score(found: Path, want: Path, value: str) -> int:
    """How well a line writing ``found`` places ``want``: the length of what they share, one
    more when the rest of ``want`` shows in an inline value; 0 when they do not agree."""
    shared = min(len(found), len(want))
    if found[:shared] != want[:shared]:
        return 0
    score = 2 * shared
    if len(found) < len(want):
        rest = want[len(found)]
        if isinstance(rest, str) and re.search(rf"(?<![\w-]){re.escape(rest)}(?![\w-])", value):
            score += 1
    elif len(found) > len(want):
        score -= 1  # a key inside the one asked about: the table's own line is better
    return score
