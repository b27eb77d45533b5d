"""The collector's configuration: one TOML file, every key optional.

```toml
[server]
listen = "127.0.0.1:8480"       # ADDR:PORT for the API and /metrics
state_dir = "/var/lib/schoolgate-collector"

[database]
url = "postgresql://collector@db.example/schoolgate"   # default: SQLite in state_dir

[ingest]
max_batch_bytes = 8388608       # a gzipped batch, at most
max_batch_events = 50000
max_future_seconds = 300        # how far ahead of our clock an event's time may be

[retention]
days = 365

[admin]
session_hours = 12             # how long a sign-in lasts
max_export_rows = 1000000      # the most rows one CSV export holds
timezone = "Europe/London"     # the zone the admin pages show times in (default: the machine's)
allow_plain_http = false       # sign-in over plain HTTP other than to localhost (closed networks)

[notify]                       # alert notifications; without this section nothing is sent
immediate = ["critical", "high"]   # severities sent at once; the rest go in the daily digest
digest_at = "07:30"            # the digest's time of day, in admin.timezone
max_immediate_per_day = 10     # per school and channel; beyond it alerts wait for the digest
admin_url = "https://collector.district.example"   # for links to the alert inbox

[notify.smtp]
host = "smtp.district.example"
username = "schoolgate"
password_file = "/etc/schoolgate/smtp.password"   # the password is never in this file
sender = "schoolgate@district.example"

[notify.webhook]
url = "https://hooks.district.example/schoolgate"
secret_file = "/etc/schoolgate/webhook.secret"    # the HMAC key every post is signed with

[[notify.recipients]]
sites = ["*"]                  # or school names
email = ["safeguarding@district.example"]
webhook = true
```

Every ``[notify]`` key and what a message says: ``docs/notifications.md``
(``schoolgate.server.notify.settings`` checks the section).

Without a file, ``run`` serves on 127.0.0.1:8480 with SQLite under the user's state directory:
the embedded default the quick start uses.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schoolgate.agent.config import ConfigError, parse_address, user_state_dir
from schoolgate.event_batch import BatchLimits
from schoolgate.server.db.engine import DatabaseUrlError, database_url
from schoolgate.server.notify.settings import NotifySection, NotifySettings, resolve

DEFAULT_LISTEN = "127.0.0.1:8480"


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_Section):
    listen: str = DEFAULT_LISTEN
    state_dir: str = ""


class DatabaseSection(_Section):
    url: str = ""


class IngestSection(_Section):
    max_batch_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 * 1024 * 1024)] = 8 * 1024 * 1024
    max_batch_events: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 50_000
    max_future_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0


class RetentionSection(_Section):
    days: Annotated[int, msgspec.Meta(ge=1, le=3_650)] = 365


class AdminSection(_Section):
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 12.0
    max_export_rows: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 1_000_000
    timezone: str = ""
    allow_plain_http: bool = False


class _Raw(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    ingest: IngestSection = msgspec.field(default_factory=IngestSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    notify: NotifySection | None = None


@dataclass(frozen=True)
class CollectorSettings:
    listen: tuple[str, int]
    state_dir: Path
    database_url: str
    limits: BatchLimits
    max_future_seconds: float
    retention_days: int
    session_seconds: float = 12 * 3_600.0
    max_export_rows: int = 1_000_000
    timezone: ZoneInfo | None = None  # None: the machine's own
    allow_plain_http: bool = False
    notify: NotifySettings | None = None  # None: no [notify] section, nothing is sent

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * 86_400.0


def load(path: Path | None) -> CollectorSettings:
    """The settings in ``path`` (None: every default); ``ConfigError`` names a bad key."""
    shown = str(path) if path is not None else "(defaults)"
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(shown, "", None, f"cannot read: {exc.strerror}") from None
    return parse(text, shown, path.parent if path is not None else Path.cwd())


def parse(text: str, shown: str, base: Path) -> CollectorSettings:
    try:
        raw = msgspec.convert(tomllib.loads(text), _Raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", None, f"not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ConfigError(shown, "", None, str(exc)) from None
    try:
        listen = parse_address(raw.server.listen)
    except ValueError as exc:
        raise ConfigError(shown, "server.listen", raw.server.listen, str(exc)) from None
    state_dir = (
        Path(raw.server.state_dir)
        if raw.server.state_dir
        else user_state_dir("schoolgate-collector")
    )
    if not state_dir.is_absolute():
        state_dir = base / state_dir
    url = raw.database.url or f"sqlite:///{state_dir / 'collector.sqlite'}"
    try:
        database_url(url)
    except DatabaseUrlError as exc:
        raise ConfigError(shown, "database.url", url, str(exc)) from None
    i = raw.ingest
    return CollectorSettings(
        listen=listen,
        state_dir=state_dir,
        database_url=url,
        limits=BatchLimits(
            max_compressed_bytes=i.max_batch_bytes,
            max_bytes=i.max_batch_bytes * 16,
            max_events=i.max_batch_events,
        ),
        max_future_seconds=i.max_future_seconds,
        retention_days=raw.retention.days,
        session_seconds=raw.admin.session_hours * 3_600.0,
        max_export_rows=raw.admin.max_export_rows,
        timezone=_timezone(shown, raw.admin.timezone),
        allow_plain_http=raw.admin.allow_plain_http,
        notify=resolve(raw.notify, shown, base),
    )


def _timezone(shown: str, name: str) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            shown, "admin.timezone", name, "not a time zone, e.g. Europe/London"
        ) from None


def local_zone() -> tzinfo:
    """The machine's time zone, with its summer time: by ``TZ``, else by the zone file
    ``/etc/localtime`` links to; failing both, the current offset (without summer time)."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = Path("/etc/localtime").resolve(strict=True)
        if "zoneinfo" in target.parts:
            candidates.append("/".join(target.parts[target.parts.index("zoneinfo") + 1 :]))
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo or UTC
