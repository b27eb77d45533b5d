"""The ``[notify]`` section of the collector's configuration: who is told about alerts, how.

Secrets (the SMTP password, the webhook's signing key) are never written in the main file:
they are read from files of their own, which can be readable by the collector's user alone
while the main file is kept in configuration management. Everything is checked when the
file is loaded, so a collector never starts with notifications that cannot work: a bad key
is a ``ConfigError`` that names it.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import msgspec

from schoolgate.agent.activity.events import Severity
from schoolgate.agent.config import ConfigError
from schoolgate.agent.loopback import is_loopback

EMAIL: Final = "email"
WEBHOOK: Final = "webhook"
CHANNELS: Final = (EMAIL, WEBHOOK)
EVERY_SITE: Final = "*"
TLS_MODES: Final = ("starttls", "implicit", "none")

_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # as ``site add`` takes them
# An address as a district writes it in a file: no display name, no comments, no quoting.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MIN_SECRET: Final = 16

_FailFn = Callable[[str, object, str], ConfigError]  # (key under notify., value, why)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SmtpSection(_Section):
    host: str = ""
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] | None = None
    tls: str = "starttls"
    username: str = ""
    password_file: str = ""
    sender: str = ""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    ca_file: str = ""


class WebhookSection(_Section):
    url: str = ""
    secret_file: str = ""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    ca_file: str = ""


class RecipientsSection(_Section):
    sites: list[str] = msgspec.field(default_factory=list)
    email: list[str] = msgspec.field(default_factory=list)
    webhook: bool = False


class NotifySection(_Section):
    immediate: list[str] = msgspec.field(default_factory=lambda: ["critical", "high"])
    digest_at: str = "07:30"
    max_immediate_per_day: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    admin_url: str = ""
    interval_seconds: Annotated[float, msgspec.Meta(ge=1, le=3_600)] = 30.0
    smtp: SmtpSection | None = None
    webhook: WebhookSection | None = None
    recipients: list[RecipientsSection] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str  # one of TLS_MODES
    username: str
    password: str = field(repr=False)
    sender: str
    timeout: float
    ca_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext:
        """Certificates verified, against the system's CAs or ``ca_file`` (a private CA)."""
        return _tls_context(self.ca_file)


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: bytes = field(repr=False)
    timeout: float
    ca_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext:
        return _tls_context(self.ca_file)


@dataclass(frozen=True)
class Recipients:
    sites: tuple[str, ...]  # school names, or EVERY_SITE
    email: tuple[str, ...]
    webhook: bool

    def covers(self, site: str) -> bool:
        return EVERY_SITE in self.sites or site in self.sites


@dataclass(frozen=True)
class NotifySettings:
    immediate: frozenset[str] = frozenset({"critical", "high"})
    digest_at: time = time(7, 30)
    max_immediate_per_day: int = 10
    admin_url: str = ""  # no trailing slash; "" for no links
    interval_seconds: float = 30.0
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    recipients: tuple[Recipients, ...] = ()

    def emails_for(self, site: str) -> tuple[str, ...]:
        """The addresses a school's email goes to, each once, in a stable order."""
        if self.smtp is None:
            return ()
        found = {a for r in self.recipients if r.covers(site) for a in r.email}
        return tuple(sorted(found, key=str.lower))

    def webhook_for(self, site: str) -> bool:
        return self.webhook is not None and any(
            r.webhook for r in self.recipients if r.covers(site)
        )

    def channels_for(self, site: str) -> tuple[str, ...]:
        found = []
        if self.emails_for(site):
            found.append(EMAIL)
        if self.webhook_for(site):
            found.append(WEBHOOK)
        return tuple(found)

    def summary(self) -> str:
        """One line for the collector's log at start."""
        said = []
        if self.smtp is not None:
            addresses = {a for r in self.recipients for a in r.email}
            said.append(
                f"email via {self.smtp.host}:{self.smtp.port} ({self.smtp.tls}) "
                f"to {len(addresses)} address{'es' if len(addresses) != 1 else ''}"
            )
        if self.webhook is not None:
            said.append(f"webhook to {urlsplit(self.webhook.url).hostname}")
        if not self.recipients:
            said.append("no [[notify.recipients]]: nothing will be sent")
        at_once = ", ".join(s.value for s in Severity if s.value in self.immediate) or "none"
        said.append(
            f"at once: {at_once} (at most {self.max_immediate_per_day} a school a day), "
            f"the rest in a digest at {self.digest_at.strftime('%H:%M')}"
        )
        return "; ".join(said)

    def inbox_link(self, site: str) -> str:
        """The admin pages' alert inbox for a school, or "" without ``admin_url``."""
        if not self.admin_url:
            return ""
        return f"{self.admin_url}/alerts?site={site}"  # site names need no quoting


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def resolve(raw: NotifySection | None, shown: str, base: Path) -> NotifySettings | None:
    """The checked settings of a ``[notify]`` section (None without one: nothing is sent).
    Relative file names are read from ``base``, the configuration file's directory."""
    if raw is None:
        return None

    def fail(key: str, value: object, why: str) -> ConfigError:
        return ConfigError(shown, f"notify.{key}", value, why)

    severities = tuple(s.value for s in Severity)
    for given in raw.immediate:
        if given not in severities:
            raise fail("immediate", given, f"not a severity: use {', '.join(severities)}")
    at = _HH_MM.match(raw.digest_at)
    if at is None:
        raise fail("digest_at", raw.digest_at, "not a time of day as HH:MM, e.g. 07:30")
    smtp = _smtp(raw.smtp, fail, base) if raw.smtp is not None else None
    webhook = _webhook(raw.webhook, fail, base) if raw.webhook is not None else None
    recipients = tuple(
        _recipients(i, r, fail, smtp is not None, webhook is not None)
        for i, r in enumerate(raw.recipients)
    )
    return NotifySettings(
        immediate=frozenset(raw.immediate),
        digest_at=time(int(at.group(1)), int(at.group(2))),
        max_immediate_per_day=raw.max_immediate_per_day,
        admin_url=_admin_url(raw.admin_url, fail),
        interval_seconds=raw.interval_seconds,
        smtp=smtp,
        webhook=webhook,
        recipients=recipients,
    )


def _admin_url(text: str, fail: _FailFn) -> str:
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail("admin_url", text, "not an http(s) URL, e.g. https://collector.example")
    if parts.query or parts.fragment or not _plain(text):
        raise fail("admin_url", text, "the admin pages' base URL takes no query or fragment")
    return text.rstrip("/")


def _smtp(raw: SmtpSection, fail: _FailFn, base: Path) -> SmtpSettings:
    if not raw.host or not _plain(raw.host):
        raise fail("smtp.host", raw.host, "the mail server's name or address is needed")
    if raw.tls not in TLS_MODES:
        raise fail("smtp.tls", raw.tls, f"use {', '.join(TLS_MODES)}")
    if not _ADDRESS.match(raw.sender):
        raise fail("smtp.sender", raw.sender, "an address such as schoolgate@district.example")
    password = ""
    if raw.username:
        if not _plain(raw.username):
            raise fail("smtp.username", raw.username, "not a user name")
        if not raw.password_file:
            raise fail("smtp.password_file", "", "needed with smtp.username")
        password = _first_line(_read(raw.password_file, base, "smtp.password_file", fail))
        if not password:
            raise fail("smtp.password_file", raw.password_file, "holds no password")
        if raw.tls == "none" and not is_loopback(raw.host):
            raise fail(
                "smtp.tls",
                raw.tls,
                "a password is never sent unencrypted: use starttls or implicit",
            )
    elif raw.password_file:
        raise fail("smtp.username", "", "needed with smtp.password_file")
    port = raw.port if raw.port is not None else 465 if raw.tls == "implicit" else 587
    return SmtpSettings(
        host=raw.host,
        port=port,
        tls=raw.tls,
        username=raw.username,
        password=password,
        sender=raw.sender,
        timeout=raw.timeout,
        ca_file=_ca_file(raw.ca_file, base, "smtp.ca_file", fail),
    )


def _webhook(raw: WebhookSection, fail: _FailFn, base: Path) -> WebhookSettings:
    parts = urlsplit(raw.url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _plain(raw.url):
        raise fail("webhook.url", raw.url, "not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # The alerts name pupils' devices and what they looked up.
        raise fail("webhook.url", raw.url, "plain http only to this machine: use https")
    if not raw.secret_file:
        raise fail("webhook.secret_file", "", "needed: every post is signed with this secret")
    secret = _read(raw.secret_file, base, "webhook.secret_file", fail).strip()
    if len(secret) < _MIN_SECRET:
        raise fail(
            "webhook.secret_file",
            raw.secret_file,
            f"holds a secret of {len(secret)} characters: use at least {_MIN_SECRET} "
            "(e.g. the output of 'openssl rand -hex 32')",
        )
    return WebhookSettings(
        url=raw.url,
        secret=secret.encode("utf-8"),
        timeout=raw.timeout,
        ca_file=_ca_file(raw.ca_file, base, "webhook.ca_file", fail),
    )


def _recipients(
    i: int, raw: RecipientsSection, fail: _FailFn, smtp: bool, webhook: bool
) -> Recipients:
    key = f"recipients[{i}]"
    if not raw.sites:
        raise fail(f"{key}.sites", raw.sites, 'name the schools, or ["*"] for every school')
    for site in raw.sites:
        if site != EVERY_SITE and not _SITE_NAME.match(site):
            raise fail(f"{key}.sites", site, "not a school's name as 'site add' takes it")
    for address in raw.email:
        if not _ADDRESS.match(address):
            raise fail(f"{key}.email", address, "not an address such as lead@school.example")
    if raw.email and not smtp:
        raise fail(f"{key}.email", raw.email, "email needs a [notify.smtp] section")
    if raw.webhook and not webhook:
        raise fail(f"{key}.webhook", True, "needs a [notify.webhook] section")
    if not raw.email and not raw.webhook:
        raise fail(key, raw.sites, "tells nobody: give email addresses or webhook = true")
    return Recipients(tuple(raw.sites), tuple(raw.email), raw.webhook)


def _read(name: str, base: Path, key: str, fail: _FailFn) -> str:
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        # utf-8-sig: a secret saved by an editor that writes a byte-order mark still works.
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(key, name, f"cannot read: {why}") from None


def _ca_file(name: str, base: Path, key: str, fail: _FailFn) -> Path | None:
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        _tls_context(path)
    except (OSError, ssl.SSLError) as exc:
        raise fail(key, name, f"not a readable PEM file of CA certificates: {exc}") from None
    return path


def _first_line(text: str) -> str:
    # A password may hold spaces; only the line break an editor adds is not part of it.
    return text.splitlines()[0] if text else ""


def _plain(text: str) -> bool:
    """No spaces or control characters: nothing that could end a line of a protocol."""
    return text.isprintable() and not any(c.isspace() for c in text)
