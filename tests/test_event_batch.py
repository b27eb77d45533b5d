"""The batch format between agents and the collector: what is sent, and what is refused."""

from __future__ import annotations

import gzip
import json

import pytest

from schoolgate.agent.activity.events import Event, EventKind, Severity, StoredEvent
from schoolgate.event_batch import (
    BatchError,
    BatchLimits,
    ShippedEvent,
    decode_batch,
    encode_batch,
    shipped,
)

LIMITS = BatchLimits()


def event(seq: int, **fields: object) -> ShippedEvent:
    values: dict[str, object] = {"seq": seq, "kind": EventKind.DNS, "time": 1_763_769_600.5}
    values.update(fields)
    return ShippedEvent(**values)  # type: ignore[arg-type]


def lines(*objects: object) -> bytes:
    return gzip.compress(b"".join(json.dumps(o).encode() + b"\n" for o in objects))


def test_a_stored_event_round_trips() -> None:
    stored = StoredEvent(
        seq=41,
        event=Event(
            kind=EventKind.ALERT,
            time=1_763_769_600.25,
            client_ip="10.2.0.7",
            mac="aa:bb:cc:dd:ee:ff",
            hostname="pupil-laptop",
            group="ks2",
            name="self-harm.example",
            qtype="A",
            action="block+alert",
            categories=("self-harm", "adult"),
            rule="category",
            rcode="NOERROR",
            latency_ms=0.4,
            cache_hit=False,
            severity=Severity.HIGH,
            data={"repeated": 3},
        ),
    )
    body = encode_batch([shipped(stored)])
    (back,) = decode_batch(body, True, LIMITS)
    assert back == shipped(stored)
    assert back.seq == 41 and back.categories == ("self-harm", "adult")


def test_defaults_are_left_out_of_a_line() -> None:
    body = gzip.decompress(encode_batch([event(1)]))
    assert json.loads(body) == {"seq": 1, "kind": "dns", "time": 1_763_769_600.5}


def test_an_uncompressed_body_is_read_too() -> None:
    body = b'{"seq": 1, "kind": "dns", "time": 1}\n{"seq": 2, "kind": "status", "time": 2}'
    assert [e.seq for e in decode_batch(body, False, LIMITS)] == [1, 2]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ({"kind": "dns", "time": 1}, "line 2: Object missing required field `seq`"),
        ({"seq": 0, "kind": "dns", "time": 1}, "line 2: Expected `int` >= 1 - at `$.seq`"),
        ({"seq": 2, "kind": "party", "time": 1}, "line 2: Invalid enum value 'party'"),
        ({"seq": 2, "kind": "dns", "time": -1}, "line 2: Expected `float` >= 0"),
        ({"seq": 2, "kind": "dns", "time": 1, "name": "x" * 300}, "line 2: Expected `str` of"),
        ({"seq": 2, "kind": "dns", "time": 1, "categories": [""]}, "line 2: Expected `str` of"),
        ({"seq": 2, "kind": "dns", "time": 1, "data": {"x": "y" * 5000}}, "line 2: data is over"),
        ({"seq": 1, "kind": "dns", "time": 1}, "line 2: sequence number 1 is in the batch twice"),
    ],
)
def test_a_bad_line_is_named(line: dict[str, object], says: str) -> None:
    good = {"seq": 1, "kind": "dns", "time": 1}
    with pytest.raises(BatchError) as caught:
        decode_batch(lines(good, line), True, LIMITS)
    assert str(caught.value).startswith(says), str(caught.value)
    assert not caught.value.too_large


def test_fields_it_does_not_know_are_ignored() -> None:
    # A newer agent may send more; and a site named in the body is never taken (the token's is).
    body = lines({"seq": 1, "kind": "dns", "time": 1, "site": "other-school", "future": [1]})
    (only,) = decode_batch(body, True, LIMITS)
    assert only == event(1, time=1.0)


def test_a_line_that_is_not_json() -> None:
    with pytest.raises(BatchError, match="line 1: not a JSON object"):
        decode_batch(gzip.compress(b"<html>\n"), True, LIMITS)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(BatchError, match="no events"):
        decode_batch(gzip.compress(b""), True, LIMITS)


def test_not_gzip() -> None:
    with pytest.raises(BatchError, match="not valid gzip"):
        decode_batch(b"plain text, said to be gzip", True, LIMITS)


def test_a_cut_short_gzip_stream() -> None:
    body = encode_batch([event(i) for i in range(1, 100)])
    with pytest.raises(BatchError, match="cut short"):
        decode_batch(body[: len(body) // 2], True, LIMITS)


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\n" * (50 * 1024 * 1024))  # 50 MB of newlines in about 50 KB
    limits = BatchLimits(max_bytes=1024 * 1024)
    with pytest.raises(BatchError, match="unpacks to more than") as caught:
        decode_batch(bomb, True, limits)
    assert caught.value.too_large


def test_too_many_events() -> None:
    body = encode_batch([event(i) for i in range(1, 12)])
    with pytest.raises(BatchError, match="11 events, over the limit of 10") as caught:
        decode_batch(body, True, BatchLimits(max_events=10))
    assert caught.value.too_large


def test_too_large_compressed() -> None:
    with pytest.raises(BatchError, match="over the limit") as caught:
        decode_batch(b"x" * 2048, True, BatchLimits(max_compressed_bytes=1024))
    assert caught.value.too_large
