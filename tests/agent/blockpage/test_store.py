"""Unblock requests on disk: durable, bounded, and failing in a way the page can report."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from schoolgate.agent.blockpage.store import (
    MAX_REASON,
    DuplicateRequest,
    StoreError,
    TooManyRequests,
    UnblockRequest,
    UnblockStore,
    clean_reason,
)

T0 = 1_795_269_900.0


def add(
    store: UnblockStore,
    name: str = "blocked.example",
    client_ip: str = "10.20.2.7",
    now: float = T0,
    *,
    reason: str | None = None,
    mac: str | None = None,
    hostname: str | None = None,
    max_per_hour: int = 10,
) -> UnblockRequest:
    return store.add(
        client_ip=client_ip,
        name=name,
        group="ks2",
        language="en",
        category="games",
        reason=reason,
        mac=mac,
        hostname=hostname,
        max_per_hour=max_per_hour,
        now=now,
    )


def test_requests_persist_across_instances(tmp_path: Path) -> None:
    first = UnblockStore(tmp_path)
    made = add(first, reason=" for  my\nhomework ", mac="02:00:00:00:00:01", hostname="ks2-7")
    first.close()
    assert first.path == tmp_path / "blockpage" / "requests.sqlite"
    second = UnblockStore(tmp_path)
    try:
        assert second.list() == [made]
        assert made.reason == "for my homework"
        assert (made.client_ip, made.group, made.category, made.shipped) == (
            "10.20.2.7",
            "ks2",
            "games",
            False,
        )
        assert len(made.id) == 32 and int(made.id, 16) >= 0
    finally:
        second.close()
    with sqlite3.connect(first.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_the_state_dir_is_made_private(tmp_path: Path) -> None:
    store = UnblockStore(tmp_path / "state")
    try:
        add(store)
        assert store.path.parent.stat().st_mode & 0o077 == 0
    finally:
        store.close()


def test_the_same_request_twice_is_kept_once(store: UnblockStore) -> None:
    made = add(store)
    with pytest.raises(DuplicateRequest) as caught:
        add(store, now=T0 + 60, reason="please")
    assert caught.value.existing == made
    # Another name, another client, or an hour later: new requests.
    add(store, name="other.example", now=T0 + 61)
    add(store, client_ip="10.20.2.8", now=T0 + 62)
    add(store, now=T0 + 3601)
    assert len(store.list()) == 4


def test_a_shipped_request_may_be_asked_again(store: UnblockStore) -> None:
    made = add(store)
    assert store.mark_shipped([made.id]) == 1
    again = add(store, now=T0 + 10)
    assert [r.id for r in store.pending()] == [again.id]


def test_at_most_n_requests_per_client_per_hour(store: UnblockStore) -> None:
    for i in range(3):
        add(store, name=f"site{i}.example", now=T0 + i, max_per_hour=3)
    with pytest.raises(TooManyRequests):
        add(store, name="site9.example", now=T0 + 10, max_per_hour=3)
    # Other clients are not affected; the client's own limit frees up as the hour passes.
    add(store, name="site9.example", client_ip="10.20.2.8", now=T0 + 10, max_per_hour=3)
    add(store, name="site9.example", now=T0 + 3600.5, max_per_hour=3)
    assert len(store.list()) == 5


def test_pending_requests_are_bounded(tmp_path: Path) -> None:
    store = UnblockStore(tmp_path, max_pending=2)
    try:
        first = add(store, client_ip="10.0.0.1")
        add(store, client_ip="10.0.0.2")
        with pytest.raises(TooManyRequests):
            add(store, client_ip="10.0.0.3")
        store.mark_shipped([first.id])
        add(store, client_ip="10.0.0.3")
    finally:
        store.close()


def test_list_pending_and_shipping(store: UnblockStore) -> None:
    made = [add(store, name=f"s{i}.example", now=T0 + i) for i in range(5)]
    assert store.list() == made
    assert store.list(since=T0 + 2) == made[3:]
    assert store.list(limit=2) == made[:2]
    assert store.mark_shipped([made[0].id, made[2].id, made[2].id, "no-such-id"]) == 2
    assert store.mark_shipped([made[0].id]) == 0
    assert [r.id for r in store.pending()] == [made[1].id, made[3].id, made[4].id]
    assert [r.shipped for r in store.list()] == [True, False, True, False, False]
    assert store.mark_shipped([]) == 0


def test_many_ids_are_shipped_in_one_call(store: UnblockStore) -> None:
    add(store)  # makes the database
    ids = [f"{i:032x}" for i in range(1, 1201)]
    with sqlite3.connect(store.path) as db:
        db.executemany(
            'INSERT INTO requests (id, created, client_ip, "group", name, language, shipped)'
            " VALUES (?, ?, '10.0.0.1', 'ks2', 'a.example', 'en', 0)",
            [(i, T0) for i in ids],
        )
    db.close()
    assert store.mark_shipped(ids) == 1200
    assert len(store.pending(limit=5000)) == 1


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (None, None),
        ("", None),
        ("   \n\t ", None),
        ("  maths lesson  ", "maths lesson"),
        ("line one\r\nline two", "line one line two"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("evil\u202etxt.exe", "evil txt.exe"),  # a bidirectional override, a format character
        ("Tie\u0302\u0301ng Vie\u0323\u0302t", "Tiếng Việt"),  # decomposed input, composed
        ("x" * 2000, "x" * MAX_REASON),
    ],
)
def test_reasons_are_cleaned(raw: str | None, kept: str | None) -> None:
    assert clean_reason(raw) == kept


def test_an_unusable_state_dir_is_a_store_error(tmp_path: Path) -> None:
    # Running as root, permissions do not stop anything: a file where a directory must be does.
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = UnblockStore(blocker / "state")
    with pytest.raises(StoreError, match="cannot make"):
        add(store)
    with pytest.raises(StoreError):
        store.pending()
    store.close()


def test_a_broken_database_is_a_store_error(tmp_path: Path) -> None:
    store = UnblockStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"this is not an SQLite database" * 100)
    try:
        with pytest.raises(StoreError, match=r"requests\.sqlite"):
            add(store)
    finally:
        store.close()
