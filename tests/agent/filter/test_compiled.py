"""The compiled list file: matching, source sets, freshness and refusing damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from dnslib import QTYPE, DNSRecord

from schoolgate.agent.dns.wire import name_labels, parse_query, text_to_wire
from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import (
    HEADER,
    MAGIC,
    VERSION,
    CompiledListError,
    CompiledLists,
    SourceInfo,
    align8,
    layout,
)
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.filter.sources import ListSource, is_current


class Opener:
    """Opens compiled files and closes every one of them when the test ends."""

    def __init__(self) -> None:
        self.opened: list[CompiledLists] = []

    def __call__(self, path: Path) -> CompiledLists:
        lists = CompiledLists(path)
        self.opened.append(lists)
        return lists

    def close(self) -> None:
        for lists in self.opened:
            lists.close()


@pytest.fixture
def open_lists() -> Iterator[Opener]:
    opener = Opener()
    yield opener
    opener.close()


def make_source(
    directory: Path, name: str, category: str, text: str, fmt: ListFormat = ListFormat.AUTO
) -> ListSource:
    path = directory / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return ListSource(name, category, path, fmt)


def covers(lists: CompiledLists, name: str) -> int:
    wire = text_to_wire(name)
    return lists.lookup(wire, name_labels(wire))


@pytest.fixture
def two_categories(tmp_path: Path, open_lists: Opener) -> CompiledLists:
    sources = [
        make_source(
            tmp_path,
            "adult-a",
            "adult",
            "# adult list\nads.example.com\nboth.example\nparent.example\n",
        ),
        make_source(tmp_path, "gambling-b", "gambling", "both.example\ncasino.example\n"),
        make_source(tmp_path, "gambling-c", "gambling", "casino.example\nchild.parent.example\n"),
    ]
    out = tmp_path / "out.sgl"
    build(sources, out)
    return open_lists(out)


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "matching", "not_matching"),
    [
        # Only two-label entries: the TLD and the long suffixes are never probed, yet deep
        # names below an entry still match.
        ("example.com\n", ["example.com", "a.b.c.d.e.f.example.com"], ["com", "other.com"]),
        # A bare TLD entry widens the window down to one label.
        ("zip\nexample.com\n", ["zip", "foo.zip", "x.example.com"], ["com", "zipper"]),
        # A deep entry widens it up: its name and names below it match, its parents do not.
        (
            "a.b.c.d.e.example\n",
            ["a.b.c.d.e.example", "x.y.a.b.c.d.e.example"],
            ["b.c.d.e.example"],
        ),
    ],
)
def test_probes_are_limited_to_label_counts_entries_have(
    tmp_path: Path, open_lists: Opener, entries: str, matching: list[str], not_matching: list[str]
) -> None:
    out = tmp_path / "out.sgl"
    build([make_source(tmp_path, "l", "adult", entries, ListFormat.DOMAINS)], out)
    lists = open_lists(out)
    for name in matching:
        assert covers(lists, name) == 1, name
        assert lists.matches(text_to_wire(name), name_labels(text_to_wire(name))), name
    for name in not_matching:
        assert covers(lists, name) == 0, name


def test_an_entry_matches_its_name_and_every_name_below_it(two_categories: CompiledLists) -> None:
    adult = 1 << two_categories.categories.index("adult")
    for name in ("ads.example.com", "x.ads.example.com", "a.b.c.ads.example.com"):
        assert covers(two_categories, name) == adult, name


@pytest.mark.parametrize(
    "name",
    [
        "example.com",  # parent
        "com",
        "other.example.com",  # sibling
        "bads.example.com",  # same text suffix, different label
        "ads.example.com.evil",  # the entry inside a longer name
        "ads.example.co",
        "ads.example.org",
        "ads",
    ],
)
def test_parents_siblings_and_lookalikes_do_not_match(
    two_categories: CompiledLists, name: str
) -> None:
    assert covers(two_categories, name) == 0


def test_root_name_matches_nothing(two_categories: CompiledLists) -> None:
    assert two_categories.lookup(b"\x00", []) == 0
    assert two_categories.matches(b"\x00", []) == []


@pytest.mark.parametrize("text", ["ADS.Example.COM.", "ads.EXAMPLE.com", "Www.Ads.Example.Com."])
def test_matching_ignores_case_and_trailing_dot(two_categories: CompiledLists, text: str) -> None:
    record = DNSRecord.question(text, "A")
    q = parse_query(bytes(record.pack()))
    assert q.qtype == QTYPE.A
    assert two_categories.lookup(q.qname, q.labels) == 1 << two_categories.categories.index("adult")
    assert covers(two_categories, text) != 0


def test_a_name_in_lists_of_two_categories_reports_both(two_categories: CompiledLists) -> None:
    mask = covers(two_categories, "www.both.example")
    assert two_categories.category_names(mask) == ["adult", "gambling"]
    wire = text_to_wire("www.both.example")
    found = two_categories.matches(wire, name_labels(wire))
    assert len(found) == 1
    offset, sources = found[0]
    assert wire[offset:] == text_to_wire("both.example")
    assert [(s.name, s.category) for s in sources] == [
        ("adult-a", "adult"),
        ("gambling-b", "gambling"),
    ]


def test_a_name_in_two_lists_of_one_category(two_categories: CompiledLists) -> None:
    mask = covers(two_categories, "casino.example")
    assert two_categories.category_names(mask) == ["gambling"]
    wire = text_to_wire("casino.example")
    [(_, sources)] = two_categories.matches(wire, name_labels(wire))
    assert [s.name for s in sources] == ["gambling-b", "gambling-c"]


def test_entries_at_several_levels_all_match(two_categories: CompiledLists) -> None:
    wire = text_to_wire("x.child.parent.example")
    found = two_categories.matches(wire, name_labels(wire))
    assert [(wire[off:], [s.name for s in srcs]) for off, srcs in found] == [
        (text_to_wire("child.parent.example"), ["gambling-c"]),
        (text_to_wire("parent.example"), ["adult-a"]),
    ]
    assert two_categories.category_names(covers(two_categories, "x.child.parent.example")) == [
        "adult",
        "gambling",
    ]


def test_categories_table_and_sources(two_categories: CompiledLists, tmp_path: Path) -> None:
    assert two_categories.categories == ("adult", "gambling")
    assert two_categories.category_names(0) == []
    assert two_categories.category_names(0b11) == ["adult", "gambling"]
    assert two_categories.count == 5  # both.example and casino.example are stored once
    first = two_categories.sources[0]
    assert isinstance(first, SourceInfo)
    assert first.name == "adult-a"
    assert first.category == "adult"
    assert first.format == "domains"
    assert first.origin == str(tmp_path / "adult-a.txt")
    assert first.entries == 3
    assert (first.invalid, first.unsupported) == (0, 0)
    expected_digest = hashlib.sha256((tmp_path / "adult-a.txt").read_bytes()).hexdigest()
    assert first.sha256 == expected_digest
    assert two_categories.file_size == (tmp_path / "out.sgl").stat().st_size


def test_lookup_agrees_with_matches(two_categories: CompiledLists) -> None:
    index = {c: i for i, c in enumerate(two_categories.categories)}
    for name in (
        "ads.example.com",
        "q.both.example",
        "casino.example",
        "x.child.parent.example",
        "nothing.example",
    ):
        wire = text_to_wire(name)
        labels = name_labels(wire)
        mask = 0
        for _, sources in two_categories.matches(wire, labels):
            for s in sources:
                mask |= 1 << index[s.category]
        assert two_categories.lookup(wire, labels) == mask, name


def test_thousands_of_names_are_all_found(tmp_path: Path, open_lists: Opener) -> None:
    names = [f"host{i}.zone{i % 97}.example" for i in range(5000)]
    src = make_source(tmp_path, "big", "big", "\n".join(names) + "\n")
    build([src], tmp_path / "big.sgl")
    lists = open_lists(tmp_path / "big.sgl")
    assert lists.count == 5000
    assert all(covers(lists, n) == 1 for n in names)
    assert all(covers(lists, f"sub.{n}") == 1 for n in names[:500])
    assert not any(covers(lists, f"host{i}.zone{i % 97}.example") for i in range(5000, 7000))
    assert not any(covers(lists, f"zone{i}.example") for i in range(97))


def test_empty_build(tmp_path: Path, open_lists: Opener) -> None:
    build([], tmp_path / "empty.sgl")
    lists = open_lists(tmp_path / "empty.sgl")
    assert lists.count == 0
    assert lists.categories == ()
    assert lists.sources == ()
    assert covers(lists, "example.com") == 0
    wire = text_to_wire("example.com")
    assert lists.matches(wire, name_labels(wire)) == []


def test_build_of_empty_lists(tmp_path: Path, open_lists: Opener) -> None:
    src = make_source(tmp_path, "blank", "adult", "# nothing yet\n")
    build([src], tmp_path / "blank.sgl")
    lists = open_lists(tmp_path / "blank.sgl")
    assert lists.count == 0
    assert lists.categories == ("adult",)
    assert covers(lists, "example.com") == 0


def test_sections_are_aligned_and_add_up(good_file: Path) -> None:
    data = good_file.read_bytes()
    _, _, _, count, table_size, _, meta_len, _ = HEADER.unpack_from(data)
    offsets = layout(count, table_size, meta_len)
    assert offsets[-1] == len(data)
    assert all(x % 8 == 0 for x in offsets)
    assert offsets[0] == HEADER.size + align8(meta_len)
    assert json.loads(data[HEADER.size : HEADER.size + meta_len])["sources"][0]["name"] == "l"


# --- freshness -----------------------------------------------------------------------------------


def test_is_current_until_a_source_changes(tmp_path: Path, open_lists: Opener) -> None:
    src = make_source(tmp_path, "l", "adult", "a.example\n")
    build([src], tmp_path / "out.sgl")
    lists = open_lists(tmp_path / "out.sgl")
    assert is_current(lists, [src])
    st = src.path.stat()
    os.utime(src.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not is_current(lists, [src])


def test_is_current_compares_the_sources(tmp_path: Path, open_lists: Opener) -> None:
    src = make_source(tmp_path, "l", "adult", "a.example\n")
    other = make_source(tmp_path, "m", "adult", "b.example\n")
    build([src], tmp_path / "out.sgl")
    lists = open_lists(tmp_path / "out.sgl")
    assert not is_current(lists, [src, other])
    assert not is_current(lists, [])
    assert not is_current(lists, [ListSource("l", "gambling", src.path)])
    assert not is_current(lists, [ListSource("l", "adult", src.path, ListFormat.HOSTS)])
    src.path.unlink()
    assert not is_current(lists, [src])


# --- damaged files -------------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    src = make_source(tmp_path, "l", "adult", "".join(f"name{i}.example\n" for i in range(40)))
    out = tmp_path / "good.sgl"
    build([src], out)
    CompiledLists(out).close()
    return out


def _damaged(good: Path, data: bytes) -> Path:
    path = good.with_name("damaged.sgl")
    path.write_bytes(data)
    return path


def _open_fails(path: Path, message: str) -> None:
    with pytest.raises(CompiledListError) as info:
        CompiledLists(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_flipping_any_byte_after_the_header_fails_the_checksum(good_file: Path) -> None:
    data = good_file.read_bytes()
    target = good_file.with_name("damaged.sgl")
    for offset in range(HEADER.size, len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        target.write_bytes(damaged)
        with pytest.raises(CompiledListError, match="checksum") as info:
            CompiledLists(target)
        assert str(target) in str(info.value)


def test_truncated_file(good_file: Path) -> None:
    data = good_file.read_bytes()
    for size in (len(data) - 1, len(data) - 8, HEADER.size + 1, HEADER.size):
        _open_fails(_damaged(good_file, data[:size]), "truncated")


def test_one_byte_appended(good_file: Path) -> None:
    _open_fails(_damaged(good_file, good_file.read_bytes() + b"\x00"), "truncated or padded")


@pytest.mark.parametrize("size", [0, 1, 63])
def test_file_shorter_than_the_header(good_file: Path, size: int) -> None:
    _open_fails(_damaged(good_file, good_file.read_bytes()[:size]), f"only {size} bytes")


def test_missing_file(tmp_path: Path) -> None:
    _open_fails(tmp_path / "nothing-here.sgl", "cannot open")


def test_a_directory_is_not_a_compiled_file(tmp_path: Path) -> None:
    (tmp_path / "dir.sgl").mkdir()
    with pytest.raises(CompiledListError):
        CompiledLists(tmp_path / "dir.sgl")


def _with_header(good: Path, **fields: int | bytes) -> Path:
    data = good.read_bytes()
    names = ["magic", "version", "header_size", "count", "bits", "reserved", "meta_len", "sum"]
    values = dict(zip(names, HEADER.unpack_from(data), strict=True))
    values.update(fields)
    return _damaged(good, HEADER.pack(*(values[n] for n in names)) + data[HEADER.size :])


def test_wrong_magic(good_file: Path) -> None:
    _open_fails(_with_header(good_file, magic=b"SGLIST\n\n"), "bad magic")
    _open_fails(_damaged(good_file, b"\x00" * 200), "bad magic")


def test_wrong_version(good_file: Path) -> None:
    _open_fails(_with_header(good_file, version=VERSION + 1), f"format version {VERSION + 1}")
    _open_fails(_with_header(good_file, version=0), "format version 0")


def test_corrupt_header_fields(good_file: Path) -> None:
    _open_fails(_with_header(good_file, header_size=32), "corrupt header")
    _open_fails(_with_header(good_file, bits=2**32 - 1), "corrupt header")
    _open_fails(_with_header(good_file, sum=12345), "checksum")
    count = HEADER.unpack_from(good_file.read_bytes())[3]
    for wrong in (count - 1, count + 1, count + 1000, 0):
        # Either the header no longer fits the count, or the sections no longer fit the size.
        _open_fails(_with_header(good_file, count=wrong), "")


def test_the_good_file_is_good(good_file: Path) -> None:
    lists = CompiledLists(good_file)
    try:
        assert HEADER.unpack_from(good_file.read_bytes())[0] == MAGIC
        assert lists.count == 40
        assert covers(lists, "name7.example") == 1
    finally:
        lists.close()


def test_a_copy_in_another_place_opens(good_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "copy.sgl"
    copy.parent.mkdir()
    shutil.copyfile(good_file, copy)
    lists = CompiledLists(copy)
    try:
        assert lists.path == copy
        assert covers(lists, "name0.example") == 1
    finally:
        lists.close()


# --- files with a good checksum but wrong contents (a writer bug) ---------------------------------


def _rewritten(good: Path, *, meta: Any = None, set_id: int | None = None) -> Path:
    """A copy of ``good`` with new metadata or a new first source-set id, and a valid checksum."""
    data = good.read_bytes()
    magic, version, hsize, count, table, reserved, meta_len, _ = HEADER.unpack_from(data)
    rest = data[HEADER.size + align8(meta_len) :]
    if meta is not None:
        raw = json.dumps(meta).encode()
        meta_len = len(raw)
        body = bytearray(raw.ljust(align8(meta_len), b" ") + rest)
    else:
        body = bytearray(data[HEADER.size :])
    if set_id is not None:
        sets_at = layout(count, table, meta_len)[2]
        struct.pack_into("<H", body, sets_at - HEADER.size, set_id)
    checksum = xxhash.xxh3_64_intdigest(bytes(body))
    header = HEADER.pack(magic, version, hsize, count, table, reserved, meta_len, checksum)
    return _damaged(good, header + bytes(body))


def _meta_of(good: Path) -> dict[str, Any]:
    data = good.read_bytes()
    meta_len = HEADER.unpack_from(data)[6]
    meta: dict[str, Any] = json.loads(data[HEADER.size : HEADER.size + meta_len])
    return meta


def test_rewritten_file_still_opens(good_file: Path) -> None:
    meta = _meta_of(good_file)
    meta["build_id"] = "rewritten"
    lists = CompiledLists(_rewritten(good_file, meta=meta, set_id=0))
    try:
        assert lists.build_id == "rewritten"
        assert covers(lists, "name3.example") == 1
    finally:
        lists.close()


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"sources": []}, id="keys-missing"),
        pytest.param(["not", "a", "dict"], id="not-an-object"),
        pytest.param("just a string", id="string"),
    ],
)
def test_metadata_that_is_not_what_it_should_be(good_file: Path, meta: Any) -> None:
    _open_fails(_rewritten(good_file, meta=meta), "corrupt metadata")


def test_source_with_unknown_fields_is_corrupt_metadata(good_file: Path) -> None:
    meta = _meta_of(good_file)
    meta["sources"][0]["colour"] = "red"
    _open_fails(_rewritten(good_file, meta=meta), "corrupt metadata")


def test_source_set_id_out_of_range_is_a_compiled_list_error(good_file: Path) -> None:
    _open_fails(_rewritten(good_file, set_id=7), "source-set table")


def test_source_set_naming_a_missing_source_is_corrupt_metadata(good_file: Path) -> None:
    meta = _meta_of(good_file)
    meta["sets"] = [[3]]
    _open_fails(_rewritten(good_file, meta=meta), "corrupt metadata")
