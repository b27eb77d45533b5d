"""Where compiled builds live on disk, and how a new build replaces the one in service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.sources import BuildError, ListSource
from schoolgate.agent.filter.store import ListStore


class Keeper:
    """Closes every compiled file a test opened."""

    def __init__(self) -> None:
        self.opened: list[CompiledLists] = []

    def keep(self, lists: CompiledLists | None) -> CompiledLists | None:
        if lists is not None:
            self.opened.append(lists)
        return lists

    def must(self, lists: CompiledLists | None) -> CompiledLists:
        assert lists is not None
        self.opened.append(lists)
        return lists


@pytest.fixture
def keeper() -> Iterator[Keeper]:
    k = Keeper()
    yield k
    for lists in k.opened:
        lists.close()


@pytest.fixture
def store(tmp_path: Path) -> ListStore:
    return ListStore(tmp_path / "state")


def make_sources(directory: Path, *names: str, list_name: str = "school") -> list[ListSource]:
    path = directory / f"{list_name}.txt"
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return [ListSource(list_name, "adult", path)]


def build_next(store: ListStore, sources: list[ListSource]) -> str:
    return build(sources, store.next).build_id


def covers(lists: CompiledLists, name: str) -> bool:
    wire = text_to_wire(name)
    return lists.lookup(wire, name_labels(wire)) != 0


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_paths(tmp_path: Path, store: ListStore) -> None:
    assert store.dir == tmp_path / "state" / "lists"
    assert store.current == store.dir / "current.sgl"
    assert store.previous == store.dir / "previous.sgl"
    assert store.next == store.dir / "next.sgl"


def test_an_empty_store_has_nothing_to_open(
    tmp_path: Path, store: ListStore, caplog: pytest.LogCaptureFixture
) -> None:
    sources = make_sources(tmp_path, "a.example")
    with caplog.at_level(logging.WARNING):
        assert store.open_current(sources) is None
        assert store.open_fallback() is None
    assert caplog.records == []  # a missing build is normal, not worth a warning


def test_promote_puts_the_next_build_in_service(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    sources = make_sources(tmp_path, "a.example")
    build_id = build_next(store, sources)
    lists = keeper.must(store.promote())
    assert lists.path == store.current
    assert lists.build_id == build_id
    assert covers(lists, "www.a.example")
    assert store.current.exists()
    assert not store.next.exists()
    assert not store.previous.exists()
    again = keeper.must(store.open_current(sources))
    assert again.build_id == build_id


def test_a_second_promote_keeps_the_first_build_as_previous(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    first_id = build_next(store, make_sources(tmp_path, "a.example"))
    first = keeper.must(store.promote())
    second_sources = make_sources(tmp_path, "b.example", list_name="newer")
    second_id = build_next(store, second_sources)
    second = keeper.must(store.promote())
    assert second.build_id == second_id != first_id
    assert covers(second, "b.example")
    assert not covers(second, "a.example")
    # The first build stays usable through its mapping even though its file was renamed.
    assert covers(first, "a.example")
    previous = keeper.must(CompiledLists(store.previous))
    assert previous.build_id == first_id
    assert keeper.must(store.open_current(second_sources)).build_id == second_id


def test_open_current_refuses_a_build_of_other_sources(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    sources = make_sources(tmp_path, "a.example")
    build_next(store, sources)
    keeper.keep(store.promote())
    changed = make_sources(tmp_path, "a.example", "b.example")  # same file, new content
    assert store.open_current(changed) is None
    assert store.open_current([ListSource("other", "adult", sources[0].path)]) is None


def test_corrupt_current_falls_back_to_previous(
    tmp_path: Path, store: ListStore, keeper: Keeper, caplog: pytest.LogCaptureFixture
) -> None:
    first_id = build_next(store, make_sources(tmp_path, "a.example"))
    keeper.keep(store.promote())
    sources = make_sources(tmp_path, "b.example", list_name="newer")
    build_next(store, sources)
    keeper.keep(store.promote())
    flip_a_byte(store.current)

    with caplog.at_level(logging.WARNING, logger="schoolgate.agent.filter.store"):
        assert store.open_current(sources) is None
    assert any("checksum" in r.getMessage() for r in caplog.records)

    fallback = keeper.must(store.open_fallback())
    assert fallback.path == store.previous
    assert fallback.build_id == first_id
    assert covers(fallback, "a.example")


def test_fallback_prefers_an_intact_current(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    build_next(store, make_sources(tmp_path, "a.example"))
    keeper.keep(store.promote())
    build_next(store, make_sources(tmp_path, "b.example", list_name="newer"))
    current_id = keeper.must(store.promote()).build_id
    fallback = keeper.must(store.open_fallback())
    assert fallback.path == store.current
    assert fallback.build_id == current_id


def test_fallback_with_only_a_previous_build(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    build_next(store, make_sources(tmp_path, "a.example"))
    keeper.keep(store.promote())
    build_next(store, make_sources(tmp_path, "b.example", list_name="newer"))
    keeper.keep(store.promote())
    store.current.unlink()
    fallback = keeper.must(store.open_fallback())
    assert fallback.path == store.previous


def test_no_fallback_when_every_build_is_corrupt(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    build_next(store, make_sources(tmp_path, "a.example"))
    keeper.keep(store.promote())
    build_next(store, make_sources(tmp_path, "b.example", list_name="newer"))
    keeper.keep(store.promote())
    flip_a_byte(store.current)
    store.previous.write_bytes(b"not a compiled list at all, and too short")
    assert store.open_fallback() is None


def test_a_corrupt_next_build_is_never_promoted(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    build_id = build_next(store, make_sources(tmp_path, "a.example"))
    keeper.keep(store.promote())
    build_next(store, make_sources(tmp_path, "b.example", list_name="newer"))
    flip_a_byte(store.next)
    with pytest.raises(CompiledListError, match="checksum"):
        store.promote()
    assert keeper.must(CompiledLists(store.current)).build_id == build_id
    assert not store.previous.exists()


def test_promote_without_a_next_build(store: ListStore) -> None:
    with pytest.raises(CompiledListError, match="cannot open"):
        store.promote()


@pytest.mark.asyncio
async def test_compile_in_a_worker_and_promote(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    sources = make_sources(tmp_path, "a.example", "b.example", "bad..example")
    compiled, report = await store.compile(sources)
    lists = keeper.must(compiled)
    assert lists.path == store.current
    assert covers(lists, "x.a.example")
    assert covers(lists, "b.example")
    assert not store.next.exists()
    assert report[0].startswith("school (adult, domains): 2 entries, 1 invalid")
    assert str(store.current) in report[-1]
    assert keeper.must(store.open_current(sources)).build_id == lists.build_id


@pytest.mark.asyncio
async def test_a_failed_compile_keeps_the_build_in_service(
    tmp_path: Path, store: ListStore, keeper: Keeper
) -> None:
    sources = make_sources(tmp_path, "a.example")
    build_id = keeper.must((await store.compile(sources))[0]).build_id
    missing = [ListSource("gone", "adult", tmp_path / "gone.txt")]
    with pytest.raises(BuildError, match="list 'gone': cannot read"):
        await store.compile(missing)
    assert keeper.must(store.open_current(sources)).build_id == build_id
    assert not store.previous.exists()
