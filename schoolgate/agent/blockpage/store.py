"""Unblock requests, kept on disk until the collector has them.

``STATE_DIR/blockpage/requests.sqlite``, an SQLite database in WAL mode: each request is one
committed row, so a power cut loses at most the request being written, and a reader (the
collector uploader, a staff command) never waits for the writer. The store is bounded: a
client gets at most ``max_per_hour`` requests an hour, the same request twice is kept once, and
no more than ``max_pending`` wait for the collector.

Every method touches the disk: the block page calls them through ``asyncio.to_thread``, never
on the event loop. A store that cannot be opened or written (a full disk, a state directory
that cannot be made) raises ``StoreError`` and is tried again on the next call.
"""

from __future__ import annotations

import builtins
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    MetaData,
    Row,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from schoolgate.agent.sqlite import SqliteError, SqliteFile

MAX_REASON: Final = 500
HOUR: Final = 3600.0
DEFAULT_MAX_PER_HOUR: Final = 10
DEFAULT_MAX_PENDING: Final = 10_000
# SQLite allows 32766 bound parameters; staying far below it keeps every version happy.
_IDS_PER_STATEMENT: Final = 500

_metadata = MetaData()
_requests = Table(
    "requests",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False),
    Column("client_ip", String(45), nullable=False),
    Column("mac", String(17)),
    Column("hostname", String(255)),
    Column("group", String(255), nullable=False),
    Column("name", String(253), nullable=False),
    Column("category", String(255)),
    Column("reason", Text),
    Column("language", String(8), nullable=False),
    Column("shipped", Boolean, nullable=False, default=False),
    Index("requests_by_client", "client_ip", "created"),
    Index("requests_pending", "shipped", "created"),
)


class StoreError(SqliteError):
    """The store cannot be opened or written; the message says why."""


class RequestNotStored(Exception):
    """A request the store's bounds turned away."""


class DuplicateRequest(RequestNotStored):
    """The client asked for the same name within the hour and it is still pending."""

    def __init__(self, existing: UnblockRequest) -> None:
        super().__init__(f"already pending: {existing.id}")
        self.existing = existing


class TooManyRequests(RequestNotStored):
    """The client has used its requests for the hour, or too many wait for the collector."""


@dataclass(frozen=True)
class UnblockRequest:
    id: str
    created: float  # seconds since the epoch, UTC
    client_ip: str
    mac: str | None
    hostname: str | None
    group: str
    name: str
    category: str | None
    reason: str | None
    language: str
    shipped: bool


def clean_reason(text: str | None) -> str | None:
    """A pupil's reason as staff will read it: one line, no control or format characters (no
    bidirectional overrides to disguise it), at most ``MAX_REASON`` characters; None if empty."""
    if text is None:
        return None
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = " ".join(text.split())[:MAX_REASON].strip()
    return text or None


def _from_row(row: Row[Any]) -> UnblockRequest:
    # The columns are the fields; SQLite gives the boolean back as an integer.
    m = row._mapping
    return UnblockRequest(**{**m, "shipped": bool(m["shipped"])})


class UnblockStore:
    def __init__(self, state_dir: Path, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.path = state_dir / "blockpage" / "requests.sqlite"
        self.max_pending = max_pending
        self._file = SqliteFile(self.path, _metadata, "unblock requests", StoreError)
        # One writer at a time in this process: the bounds are checked and the row added as one.
        self._lock = threading.Lock()

    def add(
        self,
        *,
        client_ip: str,
        name: str,
        group: str,
        language: str,
        category: str | None = None,
        reason: str | None = None,
        mac: str | None = None,
        hostname: str | None = None,
        max_per_hour: int = DEFAULT_MAX_PER_HOUR,
        now: float | None = None,
    ) -> UnblockRequest:
        """Store a request. Raises ``DuplicateRequest`` or ``TooManyRequests`` when the bounds
        turn it away (nothing is stored), ``StoreError`` when the disk does."""
        now = time.time() if now is None else now
        request = UnblockRequest(
            id=secrets.token_hex(16),
            created=now,
            client_ip=client_ip,
            mac=mac,
            hostname=hostname,
            group=group,
            name=name,
            category=category,
            reason=clean_reason(reason),
            language=language,
            shipped=False,
        )
        t = _requests
        hour_ago = now - HOUR
        with self._lock, self._connection() as conn:
            same = conn.execute(
                select(t)
                .where(
                    t.c.client_ip == client_ip,
                    t.c.name == name,
                    t.c.shipped.is_(False),
                    t.c.created > hour_ago,
                )
                .limit(1)
            ).first()
            if same is not None:
                raise DuplicateRequest(_from_row(same))
            recent = conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.client_ip == client_ip, t.c.created > hour_ago)
            ).scalar_one()
            if recent >= max_per_hour:
                raise TooManyRequests(f"{client_ip} made {recent} requests in the last hour")
            pending = conn.execute(
                select(func.count()).select_from(t).where(t.c.shipped.is_(False))
            ).scalar_one()
            if pending >= self.max_pending:
                raise TooManyRequests(f"{pending} requests already wait for the collector")
            conn.execute(
                insert(t).values(
                    id=request.id,
                    created=request.created,
                    client_ip=request.client_ip,
                    mac=request.mac,
                    hostname=request.hostname,
                    group=request.group,
                    name=request.name,
                    category=request.category,
                    reason=request.reason,
                    language=request.language,
                    shipped=False,
                )
            )
        return request

    def list(self, since: float | None = None, limit: int = 1000) -> builtins.list[UnblockRequest]:
        """Requests made after ``since`` (all when None), oldest first, at most ``limit``."""
        t = _requests
        query = select(t).order_by(t.c.created, t.c.id).limit(limit)
        if since is not None:
            query = query.where(t.c.created > since)
        with self._lock, self._connection() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def pending(self, limit: int = 1000) -> builtins.list[UnblockRequest]:
        """Requests not yet shipped to the collector, oldest first."""
        t = _requests
        query = select(t).where(t.c.shipped.is_(False)).order_by(t.c.created, t.c.id).limit(limit)
        with self._lock, self._connection() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def mark_shipped(self, ids: Iterable[str]) -> int:
        """Mark requests as delivered to the collector; the number of rows changed."""
        wanted = builtins.list(dict.fromkeys(ids))
        changed = 0
        t = _requests
        with self._lock, self._connection() as conn:
            for start in range(0, len(wanted), _IDS_PER_STATEMENT):
                chunk = wanted[start : start + _IDS_PER_STATEMENT]
                result = conn.execute(
                    update(t).where(t.c.id.in_(chunk), t.c.shipped.is_(False)).values(shipped=True)
                )
                changed += result.rowcount
        return changed

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _connection(self) -> AbstractContextManager[Connection]:
        return self._file.connection()
