"""Compiling list sources: reports, errors, size and merging."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.build import build, read_source
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.names import name_fingerprint
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.filter.sources import BuildError, ListSource, report_lines


def make_source(
    directory: Path,
    name: str,
    category: str,
    content: str | bytes,
    fmt: ListFormat = ListFormat.AUTO,
) -> ListSource:
    path = directory / f"{name}.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return ListSource(name, category, path, fmt)


def categories_of(lists: CompiledLists, name: str) -> list[str]:
    wire = text_to_wire(name)
    return lists.category_names(lists.lookup(wire, name_labels(wire)))


MIXED_DOMAINS = (
    "# school list\n"  # 1 comment
    "good.example\n"  # 2
    "bad..example\n"  # 3 invalid
    "\n"  # 4 blank, counted as a comment
    "Also.Good.Example.\n"  # 5
    "two words\n"  # 6 invalid
    "192.0.2.1\n"  # 7 invalid
    "good.example\n"  # 8 duplicate, still an entry
)


def test_report_counts(tmp_path: Path) -> None:
    src = make_source(tmp_path, "school", "adult", MIXED_DOMAINS)
    result = build([src], tmp_path / "out.sgl")
    assert result.names == 2
    assert result.path == tmp_path / "out.sgl"
    assert result.size == (tmp_path / "out.sgl").stat().st_size
    assert result.seconds >= 0
    [r] = result.sources
    assert r.source == src
    rep = r.report
    assert rep.format is ListFormat.DOMAINS
    assert (rep.lines, rep.entries, rep.comments, rep.invalid, rep.unsupported) == (8, 3, 2, 3, 0)
    assert r.sha256 == hashlib.sha256(src.path.read_bytes()).hexdigest()


def test_invalid_examples_keep_their_line_numbers(tmp_path: Path) -> None:
    src = make_source(tmp_path, "school", "adult", MIXED_DOMAINS)
    result = build([src], tmp_path / "out.sgl")
    examples = result.sources[0].report.examples
    assert [e.split(":", 1)[0] for e in examples] == ["line 3", "line 6", "line 7"]
    assert "bad..example" in examples[0]
    lines = list(report_lines(result))
    assert lines[0] == (
        "school (adult, domains): 3 entries, 3 invalid, 0 unsupported, 2 comments, 8 lines"
    )
    assert lines[1:4] == [f"    {e}" for e in examples]
    assert lines[-1].startswith(f"compiled 2 unique names into {tmp_path / 'out.sgl'} (")
    assert "bytes/name" in lines[-1]


def test_report_lines_for_an_empty_build(tmp_path: Path) -> None:
    result = build([], tmp_path / "out.sgl")
    assert result.names == 0
    [line] = report_lines(result)
    assert "compiled 0 unique names" in line
    assert "0.0 bytes/name" in line


def test_formats_are_detected_per_source(tmp_path: Path) -> None:
    hosts = make_source(tmp_path, "hosts", "ads", "127.0.0.1 localhost\n0.0.0.0 ads.example\n")
    adblock = make_source(tmp_path, "adblock", "ads", "! list\n||tracker.example^\n")
    domains = make_source(tmp_path, "domains", "ads", "plain.example\n")
    result = build([hosts, adblock, domains], tmp_path / "out.sgl")
    assert [r.report.format for r in result.sources] == [
        ListFormat.HOSTS,
        ListFormat.ADBLOCK,
        ListFormat.DOMAINS,
    ]
    assert result.names == 3
    assert result.sources[0].report.skipped == 1


def test_an_explicit_format_wins_over_detection(tmp_path: Path) -> None:
    # Read as domains, a hosts line has two words and is invalid.
    src = make_source(tmp_path, "l", "ads", "0.0.0.0 ads.example\n", ListFormat.DOMAINS)
    result = build([src], tmp_path / "out.sgl")
    assert result.names == 0
    assert result.sources[0].report.invalid == 1
    assert result.sources[0].report.format is ListFormat.DOMAINS


def test_missing_source_is_a_build_error(tmp_path: Path) -> None:
    src = ListSource("gone", "adult", tmp_path / "does-not-exist.txt")
    out = tmp_path / "out.sgl"
    with pytest.raises(BuildError, match="list 'gone': cannot read") as info:
        build([src], out)
    assert "does-not-exist.txt" in str(info.value)
    assert not out.exists()


def test_a_directory_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(BuildError, match="cannot read"):
        build([ListSource("dir", "adult", tmp_path / "dir")], tmp_path / "out.sgl")


def test_a_failed_build_leaves_the_old_file(tmp_path: Path) -> None:
    good = make_source(tmp_path, "good", "adult", "a.example\n")
    out = tmp_path / "out.sgl"
    first = build([good], out)
    before = out.read_bytes()
    with pytest.raises(BuildError):
        build([good, ListSource("gone", "adult", tmp_path / "gone.txt")], out)
    assert out.read_bytes() == before
    assert first.names == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_invalid_utf8_does_not_stop_the_build(tmp_path: Path) -> None:
    content = b"first.example\n\xff\xfe.example\nlatin1-caf\xe9.example\nlast.example\n"
    src = make_source(tmp_path, "bytes", "adult", content)
    result = build([src], tmp_path / "out.sgl")
    rep = result.sources[0].report
    assert rep.entries == 2
    assert rep.invalid == 2
    assert rep.lines == 4
    assert result.sources[0].sha256 == hashlib.sha256(content).hexdigest()
    lists = CompiledLists(tmp_path / "out.sgl")
    try:
        assert categories_of(lists, "first.example") == ["adult"]
        assert categories_of(lists, "last.example") == ["adult"]
    finally:
        lists.close()


def test_read_source_returns_fingerprints(tmp_path: Path) -> None:
    src = make_source(tmp_path, "l", "adult", "B.example\na.example\nb.example\n")
    prints, result = read_source(src)
    assert [int(p) for p in prints] == [
        name_fingerprint("b.example"),
        name_fingerprint("a.example"),
        name_fingerprint("b.example"),
    ]
    assert result.report.entries == 3


def test_digest_covers_a_file_larger_than_the_read_buffers(tmp_path: Path) -> None:
    content = "".join(f"host-{i}.example.org\n" for i in range(20_000))
    src = make_source(tmp_path, "big", "adult", content)
    _, result = read_source(src)
    assert result.sha256 == hashlib.sha256(content.encode()).hexdigest()
    assert result.report.entries == 20_000


def test_size_per_name_is_about_eleven_bytes(tmp_path: Path) -> None:
    names = [f"site{i}.example.net" for i in range(4000)]
    src = make_source(tmp_path, "many", "adult", "\n".join(names) + "\n")
    result = build([src], tmp_path / "out.sgl")
    assert result.names == 4000
    per_name = result.size / result.names
    assert 10 <= per_name < 16


def test_duplicates_across_lists_are_stored_once(tmp_path: Path) -> None:
    a = make_source(tmp_path, "a", "adult", "one.example\ntwo.example\nthree.example\n")
    b = make_source(tmp_path, "b", "adult", "TWO.example\nthree.example.\nfour.example\n")
    c = make_source(tmp_path, "c", "gambling", "three.example\nthree.example\n")
    result = build([a, b, c], tmp_path / "out.sgl")
    assert result.names == 4
    lists = CompiledLists(tmp_path / "out.sgl")
    try:
        assert lists.count == 4
        sets = sorted(lists.source_sets)
        assert sets == [(0,), (0, 1), (0, 1, 2), (1,)]
        assert categories_of(lists, "three.example") == ["adult", "gambling"]
        assert categories_of(lists, "two.example") == ["adult"]
        wire = text_to_wire("three.example")
        [(_, sources)] = lists.matches(wire, name_labels(wire))
        assert [s.name for s in sources] == ["a", "b", "c"]
    finally:
        lists.close()


def test_more_than_64_lists(tmp_path: Path) -> None:
    # Source sets are built from 64-bit words: a name in lists 0, 63, 64, 65 and 69 spans two.
    members = {0, 63, 64, 65, 69}
    sources = [
        make_source(
            tmp_path,
            f"list{i}",
            f"cat{i % 3}",
            f"own{i}.example\n" + ("shared.example\n" if i in members else ""),
        )
        for i in range(70)
    ]
    result = build(sources, tmp_path / "out.sgl")
    assert result.names == 71
    lists = CompiledLists(tmp_path / "out.sgl")
    try:
        wire = text_to_wire("shared.example")
        [(_, found)] = lists.matches(wire, name_labels(wire))
        assert [s.name for s in found] == ["list0", "list63", "list64", "list65", "list69"]
        assert categories_of(lists, "shared.example") == ["cat0", "cat1", "cat2"]
        wire = text_to_wire("own68.example")
        [(_, found)] = lists.matches(wire, name_labels(wire))
        assert [s.name for s in found] == ["list68"]
    finally:
        lists.close()


def test_too_many_lists(tmp_path: Path) -> None:
    sources = [ListSource(f"l{i}", "c", tmp_path / "never-read.txt") for i in range(0x10000)]
    with pytest.raises(BuildError, match="too many lists"):
        build(sources, tmp_path / "out.sgl")


def test_build_ids_differ_with_content(tmp_path: Path) -> None:
    first = build([make_source(tmp_path, "l", "c", "a.example\n")], tmp_path / "one.sgl")
    second = build([make_source(tmp_path, "l", "c", "b.example\n")], tmp_path / "two.sgl")
    assert first.build_id != second.build_id
    lists = CompiledLists(tmp_path / "one.sgl")
    try:
        assert lists.build_id == first.build_id
    finally:
        lists.close()


# --- the worker process --------------------------------------------------------------------------


# --- byte-order marks ----------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"


def test_byte_order_mark_before_a_domain(tmp_path: Path) -> None:
    src = make_source(tmp_path, "bom", "adult", _BOM + b"first.example\nsecond.example\n")
    result = build([src], tmp_path / "out.sgl")
    assert result.sources[0].report.entries == 2
    assert result.sources[0].report.invalid == 0


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"0.0.0.0 first.example\n0.0.0.0 second.example\n", ListFormat.HOSTS),
        (b"||first.example^\n||second.example^\n", ListFormat.ADBLOCK),
    ],
)
def test_byte_order_mark_does_not_hide_the_first_entry(
    tmp_path: Path, content: bytes, fmt: ListFormat
) -> None:
    src = make_source(tmp_path, "bom", "adult", _BOM + content, fmt)
    result = build([src], tmp_path / "out.sgl")
    lists = CompiledLists(tmp_path / "out.sgl")
    try:
        assert categories_of(lists, "second.example") == ["adult"]
        assert result.sources[0].report.entries == 2
        assert categories_of(lists, "first.example") == ["adult"]
    finally:
        lists.close()
