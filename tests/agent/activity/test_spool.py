"""The upload queue over the local store: order, alerts first, sent once, bounded."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from schoolgate.agent.activity.events import Event, EventKind, Severity
from schoolgate.agent.activity.spool import Spool, SpoolLimits
from schoolgate.agent.activity.store import ActivityStore

NOW = time.time()


@pytest.fixture
def store(tmp_path: Path) -> ActivityStore:
    return ActivityStore(tmp_path)


def dns(n: int, when: float = NOW) -> Event:
    return Event(kind=EventKind.DNS, time=when, name=f"n{n}.example", client_ip="10.0.0.1")


def alert(n: int) -> Event:
    return Event(kind=EventKind.ALERT, time=NOW, name=f"a{n}.example", severity=Severity.HIGH)


def lines(body: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def test_batches_go_oldest_first_and_each_once(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(25)])
    spool = Spool(store, "north")
    seen: list[int] = []
    while (batch := spool.next_batch(max_events=10, max_bytes=1 << 20)) is not None:
        assert [line["seq"] for line in lines(batch.body)] == list(batch.seqs)
        seen.extend(batch.seqs)
        spool.sent(batch)
    assert seen == list(range(1, 26))
    assert spool.waiting() == (0, None)


def test_an_unanswered_batch_is_made_again_with_the_same_key(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(5)])
    spool = Spool(store, "north")
    first = spool.next_batch(10, 1 << 20)
    again = spool.next_batch(10, 1 << 20)
    assert first is not None and again is not None
    assert first.key == again.key and first.body == again.body
    site, store_id, kind, numbers, count, digest = first.key.split(":")
    assert (site, kind, numbers, count) == ("north", "e", "1-5", "5")
    assert len(store_id) == 32 and len(digest) == 16


def test_numbers_that_come_round_again_make_another_key(store: ActivityStore) -> None:
    # A power cut can undo the last commits after they were shipped: the numbers are handed
    # out again to other events, which must not look like the batch the collector has.
    store.add([dns(i) for i in range(3)])
    spool = Spool(store, "north")
    before = spool.next_batch(10, 1 << 20)
    with store.connection() as conn:
        conn.exec_driver_sql("DELETE FROM events")
        conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'events'")
    store.add([dns(i + 100) for i in range(3)])
    after = spool.next_batch(10, 1 << 20)
    assert before is not None and after is not None
    assert before.seqs == after.seqs and before.key != after.key


def test_alerts_go_ahead_and_are_not_sent_twice(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(5)])
    store.add([alert(1)])  # seq 6
    store.add([dns(i) for i in range(5, 8)] + [alert(2)])  # 7, 8, 9 and the alert 10
    spool = Spool(store, "north")
    first = spool.next_batch(100, 1 << 20)
    assert first is not None and first.alerts and first.seqs == (6, 10)
    assert [line["kind"] for line in lines(first.body)] == ["alert", "alert"]
    spool.sent(first)
    rest = spool.next_batch(100, 1 << 20)
    assert rest is not None and not rest.alerts
    assert rest.seqs == (1, 2, 3, 4, 5, 7, 8, 9)
    spool.sent(rest)
    assert spool.next_batch(100, 1 << 20) is None


def test_the_byte_cap_ends_a_batch_early(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(50)])
    batch = Spool(store, "north").next_batch(max_events=50, max_bytes=1000)
    assert batch is not None and 1 <= batch.events < 50
    assert batch.raw_bytes <= 1000


def test_a_quarantined_batch_is_recorded_and_passed(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(3)])
    spool = Spool(store, "north")
    batch = spool.next_batch(10, 1 << 20)
    assert batch is not None
    spool.quarantine(batch, "400: line 2: bad")
    assert spool.next_batch(10, 1 << 20) is None
    ((_, first, last, events, reason),) = spool.quarantined()
    assert (first, last, events, reason) == (1, 3, 3, "400: line 2: bad")


def test_limits_give_up_on_old_and_excess_events(store: ActivityStore) -> None:
    store.add([dns(i, when=NOW - 10 * 86_400) for i in range(4)])  # 1-4: too old
    store.add([dns(i) for i in range(10)])  # 5-14
    spool = Spool(store, "north")
    dropped = spool.enforce(SpoolLimits(max_events=6, max_age=7 * 86_400), now=NOW)
    assert (dropped.too_old, dropped.too_many, dropped.pruned) == (4, 4, 0)
    batch = spool.next_batch(100, 1 << 20)
    assert batch is not None and batch.seqs == tuple(range(9, 15))


def test_events_pruned_before_they_were_sent_are_counted(store: ActivityStore) -> None:
    store.add([dns(i) for i in range(3)])
    spool = Spool(store, "north")
    batch = spool.next_batch(1, 1 << 20)
    assert batch is not None
    spool.sent(batch)  # 1 sent
    # A clock that jumped back and forth: old times in the middle of the queue (4, 5), and
    # an alert (7) shipped ahead of the events before it.
    store.add([dns(i, when=NOW - 40 * 86_400) for i in range(2)])  # 4, 5
    store.add([dns(i) for i in range(2)])  # 6, 7
    store.prune(NOW - 30 * 86_400)
    assert spool.enforce(SpoolLimits(max_age=30 * 86_400), now=NOW).pruned == 2
    assert spool.enforce(SpoolLimits(max_age=30 * 86_400), now=NOW).pruned == 0  # reported once
    after = spool.next_batch(100, 1 << 20)
    assert after is not None and after.seqs == (2, 3, 6, 7)


def test_events_already_sent_are_not_counted_when_pruned(store: ActivityStore) -> None:
    store.add([dns(i, when=NOW - 40 * 86_400) for i in range(3)])
    spool = Spool(store, "north")
    batch = spool.next_batch(2, 1 << 20)
    assert batch is not None
    spool.sent(batch)  # 1, 2 sent; 3 not
    assert store.prune(NOW - 30 * 86_400) == 3
    assert spool.enforce(SpoolLimits(max_age=90 * 86_400), now=NOW).pruned == 1


def test_a_new_store_names_its_batches_anew(tmp_path: Path) -> None:
    one = ActivityStore(tmp_path / "one")
    two = ActivityStore(tmp_path / "two")
    one.add([dns(1)])
    two.add([dns(1)])
    a = Spool(one, "north").next_batch(10, 1 << 20)
    b = Spool(two, "north").next_batch(10, 1 << 20)
    assert a is not None and b is not None and a.key != b.key


def test_alerts_already_shipped_are_neither_waiting_nor_dropped(store: ActivityStore) -> None:
    old_alert = Event(kind=EventKind.ALERT, time=NOW - 10 * 86_400, severity=Severity.HIGH)
    store.add([dns(i, when=NOW - 10 * 86_400) for i in range(3)] + [old_alert])
    spool = Spool(store, "north")
    shipped_first = spool.next_batch(10, 1 << 20)
    assert shipped_first is not None and shipped_first.alerts
    spool.sent(shipped_first)
    assert spool.waiting()[0] == 3
    dropped = spool.enforce(SpoolLimits(max_age=7 * 86_400), now=NOW)
    assert dropped.too_old == 3  # the three old queries, not the alert that went ahead
