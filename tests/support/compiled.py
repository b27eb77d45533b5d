"""Small compiled lists for tests of the decision code: one list per category, built for real."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.sources import ListSource


@contextmanager
def compiled_lists(
    directory: Path, by_category: Mapping[str, str], suffix: str = ""
) -> Iterator[CompiledLists]:
    """A build holding, for each category, a list ``CATEGORY{suffix}`` with the given text."""
    sources = []
    for category, text in by_category.items():
        path = directory / f"{category}.txt"
        path.write_text(text, encoding="utf-8")
        sources.append(ListSource(f"{category}{suffix}", category, path))
    build(sources, directory / "out.sgl")
    compiled = CompiledLists(directory / "out.sgl")
    try:
        yield compiled
    finally:
        compiled.close()
