"""``POST /api/v1/events`` over real HTTP on loopback, against SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from schoolgate.event_batch import (
    CONTENT_TYPE,
    BatchLimits,
    ShippedEvent,
    encode_batch,
    ndjson,
)
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.settings import CollectorSettings
from tests.support.batches import shipped_events
from tests.support.collector import CollectorThread
from tests.support.process import promtool

NOW = time.time()


def events(first: int, count: int, when: float = NOW, **fields: object) -> list[ShippedEvent]:
    return shipped_events(first, count, when, **fields)


@pytest.fixture
def collector(repo: SqlRepository, settings: CollectorSettings) -> Iterator[CollectorThread]:
    served = CollectorThread(repo, settings).start()
    yield served
    served.stop()


@pytest.fixture
def site(repo: SqlRepository) -> tuple[SiteRef, str]:
    return repo.add_site("north-primary")


def post(
    collector: CollectorThread,
    token: str | None,
    body: bytes,
    key: str | None = "north-primary:1",
    **headers: str,
) -> httpx.Response:
    sent = {"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if key is not None:
        sent["Idempotency-Key"] = key
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return httpx.post(f"{collector.url}/api/v1/events", content=body, headers=sent, timeout=10)


def test_a_batch_is_stored_and_a_replay_answered_the_same(
    collector: CollectorThread, site: tuple[SiteRef, str], repo: SqlRepository
) -> None:
    ref, token = site
    body = encode_batch(events(1, 1000))
    first = post(collector, token, body)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "site": "north-primary",
        "events": 1000,
        "inserted": 1000,
        "duplicates": 0,
        "expired": 0,
        "replayed": False,
    }
    again = post(collector, token, body)
    assert again.status_code == 200
    assert again.json()["replayed"] is True and again.json()["inserted"] == 0
    assert repo.count_events(ref.id) == 1000


def test_the_site_is_the_tokens_not_the_bodys(
    collector: CollectorThread, site: tuple[SiteRef, str], repo: SqlRepository
) -> None:
    other, other_token = repo.add_site("south-academy")
    body = b'{"seq": 1, "kind": "dns", "time": %d, "site": "north-primary"}\n' % int(NOW)
    answer = post(collector, other_token, gzip.compress(body))
    assert answer.json()["site"] == "south-academy"
    assert repo.count_events(other.id) == 1 and repo.count_events(site[0].id) == 0


def test_an_uncompressed_body_is_accepted(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    answer = post(collector, site[1], ndjson(events(1, 3)), Content_Encoding="identity")
    assert answer.status_code == 200 and answer.json()["inserted"] == 3


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer sgs_not-a-real-token"]
)
def test_without_a_sites_token(
    collector: CollectorThread, site: tuple[SiteRef, str], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = post(collector, None, encode_batch(events(1, 1)), **headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", [None, "", "x" * 201, "caf\u00e9", "line\nbreak"])
def test_an_idempotency_key_is_needed(
    collector: CollectorThread, site: tuple[SiteRef, str], key: str | None
) -> None:
    headers = {} if key is None else {"Idempotency_Key": key}
    try:
        answer = post(collector, site[1], encode_batch(events(1, 1)), key=None, **headers)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself will not send such a header
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["error"]


def test_a_bad_line_is_refused_whole_and_named(
    collector: CollectorThread, site: tuple[SiteRef, str], repo: SqlRepository
) -> None:
    body = ndjson(events(1, 2)) + b'{"seq": 3, "kind": "dns"}\n'
    answer = post(collector, site[1], gzip.compress(body))
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("line 3: Object missing required field `time`")
    assert repo.count_events() == 0


def test_an_oversized_body_is_refused(
    repo: SqlRepository, settings: CollectorSettings, site: tuple[SiteRef, str]
) -> None:
    small = dataclasses.replace(
        settings, limits=BatchLimits(max_compressed_bytes=4096, max_bytes=65536, max_events=100)
    )
    served = CollectorThread(repo, small).start()
    try:
        big = post(served, site[1], b"\0" * 5000)
        assert big.status_code == 413
        many = post(served, site[1], encode_batch(events(1, 101)))
        assert many.status_code == 413 and "101 events" in many.json()["error"]
    finally:
        served.stop()


def test_a_nul_in_a_string_is_refused(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    line = b'{"seq": 1, "kind": "dns", "time": %d, "hostname": "a\\u0000b"}\n' % int(NOW)
    answer = post(collector, site[1], gzip.compress(line))
    assert answer.status_code == 400 and "NUL" in answer.json()["error"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_value_the_database_cannot_hold_is_a_400_not_a_retry(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    # 200 dotted capital I: 200 characters as sent, over 256 once lowercased and reversed.
    body = encode_batch(events(1, 1, name="\u0130" * 200))
    answer = post(collector, site[1], body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("an event cannot be stored")


def test_another_content_encoding_is_refused(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    answer = post(collector, site[1], b"...", Content_Encoding="br")
    assert answer.status_code == 415


def test_an_event_far_ahead_of_the_clock_is_refused(
    collector: CollectorThread, site: tuple[SiteRef, str], repo: SqlRepository
) -> None:
    body = encode_batch(events(1, 2) + events(3, 1, when=NOW + 86_400))
    answer = post(collector, site[1], body)
    assert answer.status_code == 422
    assert "event 3 is" in answer.json()["error"] and "agent's clock" in answer.json()["error"]
    assert repo.count_events() == 0


def test_a_dead_database_is_a_503_with_retry_after(
    collector: CollectorThread, site: tuple[SiteRef, str], repo: SqlRepository
) -> None:
    assert post(collector, site[1], encode_batch(events(1, 1)), key="k1").status_code == 200
    with repo.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE ingest_batches")
    answer = post(collector, site[1], encode_batch(events(2, 1)), key="k2")
    assert answer.status_code == 503
    assert answer.headers["retry-after"].isdigit()
    page = httpx.get(f"{collector.url}/metrics").text
    assert "schoolgate_collector_db_errors_total 1.0" in page


def test_metrics_count_batches_and_events(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    post(collector, site[1], encode_batch(events(1, 10)), key="a")
    post(collector, site[1], encode_batch(events(1, 10)), key="a")
    post(collector, site[1], encode_batch(events(5, 10)), key="b")
    post(collector, None, encode_batch(events(1, 1)), key="c")
    page = httpx.get(f"{collector.url}/metrics").text
    for line in (
        'schoolgate_collector_ingest_batches_total{outcome="accepted"} 2.0',
        'schoolgate_collector_ingest_batches_total{outcome="replayed"} 1.0',
        'schoolgate_collector_ingest_batches_total{outcome="unauthorized"} 1.0',
        'schoolgate_collector_ingest_events_total{outcome="inserted"} 14.0',
        'schoolgate_collector_ingest_events_total{outcome="duplicate"} 16.0',
        "schoolgate_collector_insert_seconds_count 3.0",
        'schoolgate_collector_site_last_seen_timestamp_seconds{site="north-primary"}',
    ):
        assert line in page, line


def test_the_metrics_page_passes_promtool(
    collector: CollectorThread, site: tuple[SiteRef, str]
) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (./dev test takes it from Debian's prometheus)")
    post(collector, site[1], encode_batch(events(1, 10)))
    page = httpx.get(f"{collector.url}/metrics").content
    checked = subprocess.run(
        [tool, "check", "metrics"], input=page, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_health(collector: CollectorThread) -> None:
    answer = httpx.get(f"{collector.url}/healthz")
    assert answer.status_code == 200 and answer.text == "ok\n"
