"""The batch format between an agent and the collector: gzipped NDJSON, one event a line.

An agent sends its oldest unsent events as one ``POST /api/v1/events`` body. Each line is one
JSON object: the event's fields as the agent's activity log has them (``Event``), plus ``seq``,
its number in the agent's log, which names it for good (a batch sent twice carries the same
numbers, and the collector keeps each event once). Fields left at their defaults are left out.

The collector trusts nothing in a batch: ``decode_batch`` checks the compressed and unpacked
sizes before it reads a line (a gzip bomb stops at the limit), every field's type and length,
and the number of lines, and says which line is wrong and why. The site is never read from the
body: it is the one the bearer token belongs to.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec

from schoolgate.agent.activity.events import EventKind, Severity, StoredEvent

CONTENT_TYPE: Final = "application/x-ndjson"

# Generous for what an agent writes (an address, a MAC or a pseudonym such as "anon-" and 16
# hex digits, a DNS name of at most 253 characters), tight enough that a hostile body cannot
# make a row of megabytes.
_Short = Annotated[str, msgspec.Meta(max_length=64)]
_Name = Annotated[str, msgspec.Meta(max_length=255)]
_Text = Annotated[str, msgspec.Meta(max_length=512)]
_Category = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_DATA_BYTES: Final = 4096  # the JSON of an event's ``data``
# An agent's ``status`` events say more: its ``policy-test`` holds one result per group and
# category (about 200 bytes each, 15 KB for three groups). Still bounded, and an agent sends
# few of them.
MAX_STATUS_DATA_BYTES: Final = 256 * 1024


def data_limit(kind: EventKind) -> int:
    """The most bytes the JSON of an event's ``data`` may take, for an event of ``kind``."""
    return MAX_STATUS_DATA_BYTES if kind is EventKind.STATUS else MAX_DATA_BYTES


class ShippedEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of a batch: an event and its sequence number in the agent's log."""

    seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    kind: EventKind
    time: Annotated[float, msgspec.Meta(ge=0)]  # seconds since the epoch, UTC
    client_ip: _Short = ""
    mac: _Short = ""
    hostname: _Name = ""
    group: _Short = ""
    name: _Name = ""
    qtype: Annotated[str, msgspec.Meta(max_length=16)] = ""
    action: Annotated[str, msgspec.Meta(max_length=16)] = ""
    categories: Annotated[tuple[_Category, ...], msgspec.Meta(max_length=32)] = ()
    rule: _Text = ""
    rcode: Annotated[str, msgspec.Meta(max_length=16)] = ""
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    cache_hit: bool | None = None
    severity: Severity | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class BatchLimits:
    """The most a collector accepts in one batch."""

    max_compressed_bytes: int = 8 * 1024 * 1024
    max_bytes: int = 64 * 1024 * 1024  # unpacked
    max_events: int = 50_000


class BatchError(ValueError):
    """A batch that is not acceptable; the message says what and where (for the 4xx answer).

    ``too_large`` tells a body over the size limits (413) from a malformed one (400).
    """

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ShippedEvent)


def shipped(stored: StoredEvent) -> ShippedEvent:
    """The line an agent sends for an event of its log."""
    e = stored.event
    return ShippedEvent(
        seq=stored.seq,
        kind=e.kind,
        time=e.time,
        client_ip=e.client_ip,
        mac=e.mac,
        hostname=e.hostname,
        group=e.group,
        name=e.name,
        qtype=e.qtype,
        action=e.action,
        categories=e.categories,
        rule=e.rule,
        rcode=e.rcode,
        latency_ms=e.latency_ms,
        cache_hit=e.cache_hit,
        severity=e.severity,
        data=e.data,
    )


def ndjson(events: Iterable[ShippedEvent]) -> bytes:
    """The batch body before compression: one JSON object a line."""
    return b"".join(_encoder.encode(e) + b"\n" for e in events)


def compress(raw: bytes, level: int = 6) -> bytes:
    """The gzipped body of a batch whose NDJSON is ``raw``."""
    return gzip.compress(raw, compresslevel=level, mtime=0)


def encode_batch(events: Iterable[ShippedEvent], level: int = 6) -> bytes:
    """The gzipped body of a batch."""
    return compress(ndjson(events), level)


def unpack(body: bytes, gzipped: bool, limits: BatchLimits) -> bytes:
    """The NDJSON of a request body, within ``limits``; ``BatchError`` otherwise."""
    if len(body) > limits.max_compressed_bytes:
        raise BatchError(
            f"the body is {len(body):,} bytes, over the limit of {limits.max_compressed_bytes:,}",
            too_large=True,
        )
    if not gzipped:
        if len(body) > limits.max_bytes:
            raise BatchError(f"the body is over {limits.max_bytes:,} bytes", too_large=True)
        return body
    # wbits 16+: a gzip member. max_length stops a small body that unpacks to gigabytes.
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(body, limits.max_bytes)
        if inflate.unconsumed_tail:
            raise BatchError(
                f"the body unpacks to more than {limits.max_bytes:,} bytes", too_large=True
            )
        if not inflate.eof:
            raise BatchError("the gzip stream is cut short")
    except zlib.error as exc:
        raise BatchError(f"the body is not valid gzip: {exc}") from None
    return out


def decode_lines(text: bytes, limits: BatchLimits) -> list[ShippedEvent]:
    """The events of an NDJSON body, each checked; ``BatchError`` names the first bad line."""
    lines = text.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise BatchError("the batch has no events")
    if len(lines) > limits.max_events:
        raise BatchError(
            f"the batch has {len(lines):,} events, over the limit of {limits.max_events:,}",
            too_large=True,
        )
    events: list[ShippedEvent] = []
    seen: set[int] = set()
    for number, line in enumerate(lines, 1):
        if b"\\u0000" in line:
            raise BatchError(f"line {number}: a NUL character in a string")
        try:
            event = _decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise BatchError(f"line {number}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise BatchError(f"line {number}: not a JSON object: {exc}") from None
        if not math.isfinite(event.time):
            raise BatchError(f"line {number}: the time is not a number")
        limit = data_limit(event.kind)
        if event.data and len(_encoder.encode(event.data)) > limit:
            raise BatchError(f"line {number}: data is over {limit} bytes as JSON")
        if event.seq in seen:
            raise BatchError(f"line {number}: sequence number {event.seq} is in the batch twice")
        seen.add(event.seq)
        events.append(event)
    return events


def decode_batch(body: bytes, gzipped: bool, limits: BatchLimits) -> Sequence[ShippedEvent]:
    """The events of a request body: unpacked within the limits, then every line checked."""
    return decode_lines(unpack(body, gzipped, limits), limits)
