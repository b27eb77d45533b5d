"""The pseudonym key: made once, private, refused when damaged."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from schoolgate.agent.activity.pseudonyms import PseudonymKeyError, Pseudonyms, key_path, load_key


def test_the_key_is_made_once_and_private(tmp_path: Path) -> None:
    assert load_key(tmp_path, create=False) is None
    key = load_key(tmp_path)
    assert key is not None and len(key) == 32
    assert stat.S_IMODE(key_path(tmp_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path(tmp_path).parent.stat().st_mode) == 0o700
    assert load_key(tmp_path) == key
    assert Pseudonyms(key)("10.0.0.7") == Pseudonyms(load_key(tmp_path) or b"")("10.0.0.7")


def test_a_damaged_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    key_path(tmp_path).parent.mkdir(parents=True)
    key_path(tmp_path).write_bytes(b"short")
    with pytest.raises(PseudonymKeyError, match=r"5 bytes, not 32.*move it away"):
        load_key(tmp_path)


def test_a_key_that_cannot_be_read_says_where_and_why(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be", encoding="utf-8")
    with pytest.raises(PseudonymKeyError, match=r"pseudonym key .*state/activity.*Not a directory"):
        load_key(blocker)
