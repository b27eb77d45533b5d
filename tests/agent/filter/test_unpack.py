"""Unpacking a downloaded list: plain, gzip/bzip2/xz, tar members, caps and bad archives."""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from schoolgate.agent.filter.unpack import UnpackError, unpack
from tests.support.lists_server import gz, tarball

LIST = "".join(f"host{n}.example\n" for n in range(3000)).encode()
MAX = 10 * 1024 * 1024

Compress = Callable[[bytes], bytes]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    directory = tmp_path / "downloads"
    directory.mkdir()
    return directory / "adult.raw"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "lists"
    directory.mkdir()
    return directory / "adult.txt"


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def tar_with(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A tar.gz archive of regular files (name, content) and prepared non-file entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


# --- plain and single-file compression -----------------------------------------------------


def test_plain_file_is_moved(raw: Path, out: Path) -> None:
    data = LIST + bytes(range(256))  # not only text: the bytes are kept as they are
    raw.write_bytes(data)

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == data
    assert not raw.exists()
    assert names(out.parent) == ["adult.txt"]


def test_empty_plain_file_is_moved(raw: Path, out: Path) -> None:
    raw.write_bytes(b"")

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == b""


def test_plain_file_over_cap_is_refused(raw: Path, out: Path) -> None:
    raw.write_bytes(LIST)

    with pytest.raises(UnpackError, match="more than"):
        unpack(raw, out, "", len(LIST) - 1)

    assert not out.exists()
    assert raw.read_bytes() == LIST
    assert names(out.parent) == []


def test_plain_file_at_cap_is_accepted(raw: Path, out: Path) -> None:
    raw.write_bytes(LIST)

    unpack(raw, out, "", len(LIST))

    assert out.read_bytes() == LIST


@pytest.mark.parametrize(
    "compress",
    [gz, bz2.compress, lzma.compress],
    ids=["gzip", "bzip2", "xz"],
)
def test_compressed_single_file(raw: Path, out: Path, compress: Compress) -> None:
    raw.write_bytes(compress(LIST))

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == LIST
    assert names(out.parent) == ["adult.txt"]


def test_kind_comes_from_content_not_name(tmp_path: Path, out: Path) -> None:
    raw = tmp_path / "adult.txt"  # a gzip file with a plain file's name
    raw.write_bytes(gz(LIST))

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == LIST


def test_existing_out_is_replaced(raw: Path, out: Path) -> None:
    out.write_bytes(b"old.example\n" * 10_000)
    raw.write_bytes(gz(LIST))

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == LIST
    assert names(out.parent) == ["adult.txt"]


# --- tar archives --------------------------------------------------------------------------


UT1 = {
    "blacklists/adult/domains": LIST,
    "blacklists/adult/urls": b"bad.example/path\n",
    "blacklists/games/domains": b"game.example\n",
}


def test_tar_member_by_exact_path(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball(dict(UT1)))

    unpack(raw, out, "blacklists/games/domains", MAX)

    assert out.read_bytes() == b"game.example\n"
    assert names(out.parent) == ["adult.txt"]


def test_tar_member_by_glob(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"adult/urls": "x.example/a\n", "adult/domains": LIST}))

    unpack(raw, out, "*/domains", MAX)

    assert out.read_bytes() == LIST


def test_tar_glob_takes_first_match(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball(dict(UT1)))

    unpack(raw, out, "*/domains", MAX)

    assert out.read_bytes() == LIST


def test_tar_without_member_takes_first_file(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"only/list.txt": LIST, "second.txt": "no.example\n"}))

    unpack(raw, out, "", MAX)

    assert out.read_bytes() == LIST


def test_tar_member_with_leading_dot_slash(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"./adult/domains": LIST}))

    unpack(raw, out, "adult/domains", MAX)

    assert out.read_bytes() == LIST


@pytest.mark.parametrize("compress", ["gz", "bz2", "xz", ""])
def test_tar_compressions(raw: Path, out: Path, compress: str) -> None:
    raw.write_bytes(tarball({"adult/domains": LIST}, compress=compress))

    unpack(raw, out, "adult/domains", MAX)

    assert out.read_bytes() == LIST
    assert names(out.parent) == ["adult.txt"]


def test_missing_member_lists_archive(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball(dict(UT1)))

    with pytest.raises(UnpackError, match="no file matching 'phishing/domains'") as caught:
        unpack(raw, out, "phishing/domains", MAX)

    for name in UT1:
        assert name in str(caught.value)
    assert not out.exists()
    assert names(out.parent) == []


def test_missing_member_lists_at_most_ten(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({f"list{n:02}.txt": "a.example\n" for n in range(15)}))

    with pytest.raises(UnpackError) as caught:
        unpack(raw, out, "domains", MAX)

    assert "list09.txt" in str(caught.value)
    assert "list10.txt" not in str(caught.value)


def test_member_is_matched_case_sensitively(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"adult/Domains": LIST}))

    with pytest.raises(UnpackError, match="no file matching"):
        unpack(raw, out, "adult/domains", MAX)


@pytest.mark.parametrize("content", [LIST, gz(LIST)], ids=["plain", "gzip"])
def test_member_given_for_non_tar_is_refused(raw: Path, out: Path, content: bytes) -> None:
    raw.write_bytes(content)

    with pytest.raises(UnpackError, match="expected a tar archive holding 'adult/domains'"):
        unpack(raw, out, "adult/domains", MAX)

    assert not out.exists()
    assert raw.read_bytes() == content
    assert names(out.parent) == []


def test_directories_and_links_are_skipped(raw: Path, out: Path) -> None:
    raw.write_bytes(
        tar_with(
            [
                entry("adult", tarfile.DIRTYPE),
                entry("dir/domains", tarfile.DIRTYPE),
                entry("sym/domains", tarfile.SYMTYPE, "/etc/passwd"),
                entry("hard/domains", tarfile.LNKTYPE, "etc/passwd"),
                entry("fifo/domains", tarfile.FIFOTYPE),
                ("adult/domains", LIST),
            ]
        )
    )

    unpack(raw, out, "*/domains", MAX)

    assert out.read_bytes() == LIST
    assert names(out.parent) == ["adult.txt"]


def test_only_links_match_is_missing_member(raw: Path, out: Path) -> None:
    raw.write_bytes(
        tar_with(
            [
                entry("adult", tarfile.DIRTYPE),
                entry("adult/domains", tarfile.SYMTYPE, "/etc/passwd"),
            ]
        )
    )

    with pytest.raises(UnpackError, match=r"no file matching .*no files"):
        unpack(raw, out, "adult/domains", MAX)

    assert not out.exists()


@pytest.mark.parametrize("hostile", ["../../etc/domains", "/abs/domains", "../../../../domains"])
def test_hostile_member_path_only_reaches_out(
    tmp_path: Path, raw: Path, out: Path, hostile: str
) -> None:
    raw.write_bytes(tar_with([(hostile, LIST)]))
    outside = [tmp_path.parent / "etc", Path("/abs"), tmp_path.parent / "domains"]
    before = [path.exists() for path in outside]

    unpack(raw, out, "*domains", MAX)

    assert out.read_bytes() == LIST
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert files == ["downloads", "downloads/adult.raw", "lists", "lists/adult.txt"]
    assert [path.exists() for path in outside] == before


def test_hostile_passwd_member_only_reaches_out(tmp_path: Path, raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"../../etc/passwd": "root.example\n"}))

    unpack(raw, out, "*/passwd", MAX)

    assert out.read_bytes() == b"root.example\n"
    assert not (tmp_path.parent / "etc").exists()
    assert names(out.parent) == ["adult.txt"]


# --- caps ("zip bombs") --------------------------------------------------------------------


def test_gzip_bomb_is_refused(raw: Path, out: Path) -> None:
    raw.write_bytes(gz(b"\0" * 1024 * 1024))

    with pytest.raises(UnpackError, match="more than 102400 bytes"):
        unpack(raw, out, "", 100 * 1024)

    assert not out.exists()
    assert names(out.parent) == []


def test_tar_bomb_is_refused(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"adult/domains": b"\0" * 1024 * 1024}, compress="xz"))

    with pytest.raises(UnpackError, match="more than 102400 bytes"):
        unpack(raw, out, "adult/domains", 100 * 1024)

    assert not out.exists()
    assert names(out.parent) == []


def test_output_at_cap_is_accepted(raw: Path, out: Path) -> None:
    raw.write_bytes(gz(LIST))

    unpack(raw, out, "", len(LIST))

    assert out.read_bytes() == LIST


def test_output_one_over_cap_is_refused(raw: Path, out: Path) -> None:
    raw.write_bytes(tarball({"adult/domains": LIST}))

    with pytest.raises(UnpackError, match="refused"):
        unpack(raw, out, "adult/domains", len(LIST) - 1)

    assert names(out.parent) == []


# --- truncated and corrupt archives --------------------------------------------------------


@pytest.mark.parametrize(
    "compress",
    [gz, bz2.compress, lzma.compress],
    ids=["gzip", "bzip2", "xz"],
)
def test_truncated_single_file_is_corrupt(raw: Path, out: Path, compress: Compress) -> None:
    data: bytes = compress(LIST)
    raw.write_bytes(data[: len(data) // 2])

    with pytest.raises(UnpackError, match="truncated or corrupt"):
        unpack(raw, out, "", MAX)

    assert not out.exists()
    assert names(out.parent) == []


def test_gzip_missing_trailer_is_corrupt(raw: Path, out: Path) -> None:
    raw.write_bytes(gz(LIST)[:-4])

    with pytest.raises(UnpackError, match="truncated or corrupt"):
        unpack(raw, out, "", MAX)


@pytest.mark.parametrize("compress", ["gz", "bz2", "xz", ""])
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_tar_is_corrupt(raw: Path, out: Path, compress: str, keep: float) -> None:
    data = tarball({"adult/domains": LIST}, compress=compress)
    raw.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(UnpackError):
        unpack(raw, out, "adult/domains", MAX)

    assert not out.exists()
    assert names(out.parent) == []


@pytest.mark.parametrize(
    "magic",
    [b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"BZh9", b"\xfd7zXZ\x00"],
    ids=["gzip", "gzip-deflate", "bzip2", "xz"],
)
def test_garbage_after_magic_is_corrupt(raw: Path, out: Path, magic: bytes) -> None:
    raw.write_bytes(magic + bytes(range(7, 250)) * 4)

    with pytest.raises(UnpackError, match="truncated or corrupt"):
        unpack(raw, out, "", MAX)

    assert names(out.parent) == []


def failing_inputs() -> list[tuple[bytes, str, int]]:
    return [
        (gz(LIST)[:100], "", MAX),
        (gz(b"\0" * 1024 * 1024), "", 1024),
        (tarball({"adult/domains": LIST}), "games/domains", MAX),
        (tarball({"adult/domains": LIST})[:300], "adult/domains", MAX),
        (LIST, "adult/domains", MAX),
    ]


@pytest.mark.parametrize(
    ("content", "member", "max_bytes"),
    failing_inputs(),
    ids=["truncated", "bomb", "no-member", "truncated-tar", "not-tar"],
)
def test_failure_keeps_existing_out(
    raw: Path, out: Path, content: bytes, member: str, max_bytes: int
) -> None:
    out.write_bytes(b"last.good.example\n")
    raw.write_bytes(content)

    with pytest.raises(UnpackError):
        unpack(raw, out, member, max_bytes)

    assert out.read_bytes() == b"last.good.example\n"
    assert names(out.parent) == ["adult.txt"]


def test_missing_download_is_a_file_system_error(raw: Path, out: Path) -> None:
    with pytest.raises(FileNotFoundError):
        unpack(raw, out, "", MAX)

    assert names(out.parent) == []
