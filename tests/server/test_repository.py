"""The collector's store on SQLite and PostgreSQL: sites, batches once, retention."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import IntegrityError

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.db.partitions import DAY, day_of, partition_name
from schoolgate.server.repository import SiteExists, SqlRepository
from schoolgate.server.tokens import PREFIX
from tests.support.batches import shipped_events

NOW = time.time()


def events(first: int, count: int, when: float = NOW, **fields: object) -> list[ShippedEvent]:
    return shipped_events(first, count, when, **fields)


def test_a_site_token_is_shown_once_and_kept_hashed(repo: SqlRepository) -> None:
    site, token = repo.add_site("north-primary")
    assert token.startswith(PREFIX) and len(token) > 40
    assert repo.site_for_token(token) == site
    assert repo.site_for_token(token + "x") is None
    assert repo.site_for_token("") is None
    with repo.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM sites").scalar_one()
    assert token not in stored and len(stored) == 64


def test_site_names_are_unique(repo: SqlRepository) -> None:
    repo.add_site("north-primary")
    with pytest.raises(SiteExists, match="north-primary"):
        repo.add_site("north-primary")


def test_a_batch_is_recorded_once(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    batch = events(1, 500)
    first = repo.ingest(site, "north-primary:1-500", batch, keep_after=0)
    assert (first.inserted, first.duplicates, first.expired, first.replayed) == (500, 0, 0, False)
    again = repo.ingest(site, "north-primary:1-500", batch, keep_after=0)
    assert again.replayed and again.inserted == 0
    assert repo.count_events(site.id) == 500


def test_events_sent_again_under_another_key_are_not_doubled(repo: SqlRepository) -> None:
    # An agent that lost the answer to a batch and regrouped it (alerts first, say) sends the
    # same events under a new key: each event is still kept once.
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "a", events(1, 100), keep_after=0)
    mixed = repo.ingest(site, "b", events(51, 100), keep_after=0)
    assert (mixed.inserted, mixed.duplicates) == (50, 50)
    assert repo.count_events(site.id) == 150


def test_sites_are_kept_apart(repo: SqlRepository) -> None:
    north, _ = repo.add_site("north-primary")
    south, _ = repo.add_site("south-academy")
    repo.ingest(north, "k", events(1, 10), keep_after=0)
    result = repo.ingest(south, "k", events(1, 10), keep_after=0)  # same key and numbers
    assert result.inserted == 10 and not result.replayed
    assert repo.count_events(north.id) == 10 and repo.count_events(south.id) == 10
    listed = {s.name: s for s in repo.sites()}
    assert listed["north-primary"].events == 10
    assert listed["south-academy"].last_seen is not None


def test_a_wiped_agent_numbering_again_keeps_its_new_events(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "first-install:1-10", events(1, 10, when=NOW - 3600), keep_after=0)
    result = repo.ingest(site, "second-install:1-10", events(1, 10, when=NOW), keep_after=0)
    assert result.inserted == 10
    assert repo.count_events(site.id) == 20


def test_events_older_than_retention_are_counted_not_kept(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    old = events(1, 5, when=NOW - 40 * DAY)
    new = events(6, 5)
    result = repo.ingest(site, "k", old + new, keep_after=NOW - 30 * DAY)
    assert (result.inserted, result.expired) == (5, 5)


def test_every_field_is_stored(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    (alert,) = events(
        7,
        1,
        kind=EventKind.ALERT,
        client_ip="10.0.0.7",
        mac="aa:bb:cc:dd:ee:ff",
        hostname="<img src=x onerror=alert(1)>",
        group="ks2",
        name="www.self-harm.example",
        qtype="AAAA",
        action="block+alert",
        categories=("self-harm", "adult"),
        rule="category",
        rcode="NOERROR",
        latency_ms=0.25,
        cache_hit=True,
        severity=Severity.HIGH,
        data={"quiet_minutes": 15},
    )
    repo.ingest(site, "k", [alert], keep_after=0)
    with repo.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT * FROM events").mappings().one()
    assert row["site_id"] == site.id and row["seq"] == 7 and row["kind"] == "alert"
    assert row["hostname"] == "<img src=x onerror=alert(1)>"
    assert row["rname"] == "example.self-harm.www."
    assert row["category"] == "self-harm" and row["categories"] == ",self-harm,adult,"
    assert row["severity"] == "high" and row["cache_hit"] in (True, 1)
    assert row["data"] == '{"quiet_minutes":15}'


def test_prune_removes_what_is_older(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    today = day_of(NOW) * DAY
    repo.ingest(site, "old", events(1, 20, when=today - 10 * DAY), keep_after=0)
    repo.ingest(site, "new", events(21, 20, when=today + 60), keep_after=0)
    gone = repo.prune(today - 5 * DAY)
    assert repo.count_events(site.id) == 20
    if repo.partitions is not None:
        assert gone == 1  # a day's partition
        assert partition_name(day_of(today - 10 * DAY)) not in [
            partition_name(d) for d in repo.partitions.days()
        ]
    else:
        assert gone == 20


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_partitions_are_made_ahead_and_on_demand(repo: SqlRepository) -> None:
    assert repo.partitions is not None
    today = day_of(NOW)
    assert repo.partitions.ahead(days=2, now=NOW) == 3
    assert repo.partitions.ahead(days=2, now=NOW) == 0
    assert repo.partitions.days() == [today, today + 1, today + 2]
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "k", events(1, 3, when=(today - 3) * DAY), keep_after=0)
    assert today - 3 in repo.partitions.days()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_failed_insert_is_never_taken_for_a_replay(repo: SqlRepository) -> None:
    # A day dropped behind the collector's back (another process, a DBA): the insert fails,
    # and must be an error the agent retries, not "already recorded".
    assert repo.partitions is not None
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "first", events(1, 3), keep_after=0)
    with repo.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {partition_name(day_of(NOW))}")
    with pytest.raises(IntegrityError):
        repo.ingest(site, "second", events(4, 3), keep_after=0)
    again = repo.ingest(site, "second", events(4, 3), keep_after=0)  # the day is made anew
    assert again.inserted == 3 and not again.replayed
