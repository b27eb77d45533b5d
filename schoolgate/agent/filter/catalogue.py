"""The catalogue of public list sources (``filter_lists/sources.toml``).

Each entry names a public list, the category it feeds, where to download it, its format, its
licence and the attribution the licence asks for, and whether a new install uses it. A site
turns entries on and off in its configuration (``[sources]``); this module only reads the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import msgspec

from schoolgate.agent.filter.parsers import ListFormat

BUNDLED_CATALOGUE: Final = "sources.toml"
_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class CatalogueError(Exception):
    """A catalogue entry that cannot be used."""


@dataclass(frozen=True)
class CatalogueSource:
    id: str
    category: str
    url: str  # a download, or
    file: str  # one of the project's own lists, relative to the catalogue
    format: ListFormat
    member: str
    licence: str
    attribution: str
    homepage: str
    default: bool
    checked: str


class _Source(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    category: str
    format: ListFormat
    licence: str
    attribution: str
    default: bool
    checked: str
    url: str = ""
    file: str = ""
    homepage: str = ""
    member: str = ""


class _File(msgspec.Struct, forbid_unknown_fields=True):
    source: list[_Source]


def parse_catalogue(text: str, where: str) -> Mapping[str, CatalogueSource]:
    try:
        raw = msgspec.convert(tomllib.loads(text), _File, strict=True)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    sources: dict[str, CatalogueSource] = {}
    for s in raw.source:
        if not _ID.fullmatch(s.id):
            raise CatalogueError(f"{where}: source id {s.id!r} is not lowercase [a-z0-9-]")
        if s.id in sources:
            raise CatalogueError(f"{where}: source {s.id!r} is listed twice")
        if bool(s.url) == bool(s.file):
            raise CatalogueError(f"{where}: source {s.id!r}: give exactly one of url and file")
        if s.url and not s.url.startswith("https://"):
            raise CatalogueError(f"{where}: source {s.id!r}: the URL must use https")
        if s.default and not s.licence:
            raise CatalogueError(f"{where}: source {s.id!r} is on by default with no licence")
        sources[s.id] = CatalogueSource(
            id=s.id,
            category=s.category,
            url=s.url,
            file=s.file,
            format=s.format,
            member=s.member,
            licence=s.licence,
            attribution=s.attribution,
            homepage=s.homepage,
            default=s.default,
            checked=s.checked,
        )
    return sources


def bundled_file(source: CatalogueSource) -> Path:
    """Where one of the project's own lists is on disk."""
    ref = resources.files("schoolgate.filter_lists").joinpath(source.file)
    return Path(str(ref)).absolute()


@cache
def bundled() -> Mapping[str, CatalogueSource]:
    """The catalogue that ships with schoolgate."""
    ref = resources.files("schoolgate.filter_lists").joinpath(BUNDLED_CATALOGUE)
    return parse_catalogue(ref.read_text(encoding="utf-8"), f"(bundled {BUNDLED_CATALOGUE})")
