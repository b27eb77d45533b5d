"""The notifier: the job the collector runs every ``notify.interval_seconds``.

Each run, in this order:

1. **Take in** the alerts that arrived since the last run. For each school and channel with
   recipients, the alerts of the ``immediate`` severities become one immediate message, unless
   the school has had ``max_immediate_per_day`` of them today (in ``admin.timezone``): then
   they wait for the digest, counted as held back. The other alerts wait for the digest.
2. **Make the digests** once the day's ``digest_at`` has passed and no digest was made since:
   per school and channel, one message with the alerts waiting, less those acknowledged in
   the admin pages meanwhile. The time of the last digest is in the database, so a collector
   that was down at ``digest_at`` makes the digest when it is back, and a restart never makes
   two.
3. **Deliver** the messages that are due: new ones, and failed ones whose backoff is over
   (30 seconds after the first failure, doubling up to an hour, for as long as it takes).

A message is composed from the database at each attempt, so what is sent is what the ledger
says it carries. A message that went out just before the collector died, and whose delivery
was not yet written down, goes again on the next run: the one way a message arrives twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, tzinfo
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.notify import ledger
from schoolgate.server.notify.compose import (
    DIGEST,
    IMMEDIATE,
    Draft,
    Style,
    email_text,
    subject,
    webhook_payload,
)
from schoolgate.server.notify.mail import Mailer, Refused, SmtpDown, build
from schoolgate.server.notify.settings import EMAIL, WEBHOOK, NotifySettings
from schoolgate.server.notify.webhook import Poster, WebhookDown, WebhookRefused, encode

log = logging.getLogger("schoolgate.server.notify")

# How far before the newest arrival taken in the next run starts looking: a batch's arrival
# time is taken before its transaction commits, and a large batch can commit after a smaller
# one that arrived later. Alerts taken in already are skipped by their key.
OVERLAP: Final = 600.0
INTAKE_LIMIT: Final = 10_000  # alerts taken in per run; a flood is taken over several runs
DELIVERY_LIMIT: Final = 200  # messages tried per run
FIRST_RETRY: Final = 30.0
LAST_RETRY: Final = 3_600.0
# A claimed message is not tried by another run until then: longer than any one attempt.
LEASE: Final = 900.0
_HELD: Final = "held"


def backoff(attempts: int) -> float:
    """Seconds until the next try after ``attempts`` failed ones."""
    return min(FIRST_RETRY * 2.0 ** max(attempts - 1, 0), LAST_RETRY)


class _Down(Exception):
    """The channel is down: every message still due on it fails this run with this error."""


class Notifier:
    def __init__(
        self,
        engine: Engine,
        settings: NotifySettings,
        zone: tzinfo,
        retention_seconds: float,
        metrics: CollectorMetrics,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.zone = zone
        self.retention_seconds = retention_seconds
        self.metrics = metrics
        self._channels = tuple(
            c
            for c, on in (
                (EMAIL, settings.smtp is not None),
                (WEBHOOK, settings.webhook is not None),
            )
            if on
        )

    # --- the job ------------------------------------------------------------------------------

    def run_logged(self) -> None:
        """``run``, for the scheduler: a failing database is logged, and tried next time."""
        try:
            self.run()
        except SQLAlchemyError as exc:
            log.warning("notifications: the database failed, tried again next run: %s", exc)

    def run(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.take_in(now)
        self.make_digests(now)
        self.deliver(now)
        with self.engine.connect() as conn:
            waiting = ledger.pending(conn)
        for channel, gauge in self.metrics.notify_pending.items():
            gauge.set(waiting.get(channel, 0))

    # --- 1. taking alerts in ------------------------------------------------------------------

    def take_in(self, now: float) -> int:
        """Route the alerts that arrived since the last run; how many were taken in."""
        s = self.settings
        # A look first, so that a run with nothing to do writes nothing.
        with self.engine.connect() as conn:
            cursor = ledger.read_cursor(conn, ledger.INTAKE)
            if cursor is not None and not ledger.new_alerts(conn, cursor, 1):
                return 0
        with self.engine.begin() as conn:
            cursor = ledger.lock_cursor(conn, ledger.INTAKE)
            if cursor is None:
                # Alerts from before notifications were set up are not sent.
                ledger.move_cursor(conn, ledger.INTAKE, now)
                return 0
            found = ledger.new_alerts(conn, cursor, INTAKE_LIMIT)
            if not found:
                return 0
            names = ledger.site_names(conn)
            day = self.day_start(now)
            by_site: dict[int, list[ledger.NewAlert]] = {}
            for alert in found:
                by_site.setdefault(alert.site_id, []).append(alert)
            counted: list[tuple[str, str, int]] = []
            for site_id, alerts in by_site.items():
                site = names.get(site_id)
                for channel in s.channels_for(site) if site else ():
                    counted += self._route(conn, site_id, channel, alerts, now, day)
            ledger.move_cursor(conn, ledger.INTAKE, max(cursor, found[-1].received - OVERLAP))
        for channel, route, n in counted:
            if route == _HELD:
                self.metrics.notify_held[channel].inc(n)
            self.metrics.notify_alerts[channel, DIGEST if route == _HELD else route].inc(n)
        return len(found)

    def _route(
        self,
        conn: Connection,
        site_id: int,
        channel: str,
        alerts: list[ledger.NewAlert],
        now: float,
        day: float,
    ) -> list[tuple[str, str, int]]:
        s = self.settings
        urgent = [a for a in alerts if a.severity in s.immediate]
        rest = [a for a in alerts if a.severity not in s.immediate]
        counted = []
        if urgent:
            sent_today = ledger.immediate_since(conn, site_id, channel, day)
            if sent_today < s.max_immediate_per_day:
                message = ledger.add_message(
                    conn,
                    site_id=site_id,
                    channel=channel,
                    kind=IMMEDIATE,
                    now=now,
                    alerts=len(urgent),
                    last_immediate=sent_today + 1 >= s.max_immediate_per_day,
                )
                ledger.add_alerts(
                    conn, urgent, channel=channel, now=now, state=ledger.QUEUED, message_id=message
                )
                counted.append((channel, IMMEDIATE, len(urgent)))
            else:
                ledger.add_alerts(
                    conn, urgent, channel=channel, now=now, state=ledger.WAITING, held=True
                )
                counted.append((channel, _HELD, len(urgent)))
        ledger.add_alerts(conn, rest, channel=channel, now=now, state=ledger.WAITING)
        if rest:
            counted.append((channel, DIGEST, len(rest)))
        return counted

    def day_start(self, now: float) -> float:
        """Midnight of ``now``'s day in the collector's zone: when the daily cap starts."""
        local = datetime.fromtimestamp(now, self.zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    # --- 2. the daily digest ------------------------------------------------------------------

    def digest_time(self, now: float) -> float:
        """The latest ``digest_at`` at or before ``now``, in the collector's zone."""
        local = datetime.fromtimestamp(now, self.zone).date()
        at = datetime.combine(local, self.settings.digest_at, tzinfo=self.zone)
        if at.timestamp() > now:
            at = datetime.combine(local - timedelta(days=1), self.settings.digest_at, self.zone)
        return at.timestamp()

    def make_digests(self, now: float) -> int:
        """The digests, when one is due; how many messages were made."""
        made = 0
        with self.engine.connect() as conn:
            last = ledger.read_cursor(conn, ledger.DIGEST_MADE)
        if last is not None and last >= self.digest_time(now):
            return 0
        with self.engine.begin() as conn:
            # Again under the lock: another collector on the database may have made it.
            last = ledger.lock_cursor(conn, ledger.DIGEST_MADE)
            if last is None:
                ledger.move_cursor(conn, ledger.DIGEST_MADE, now)
                return 0
            if last >= self.digest_time(now):
                return 0
            for channel in self._channels:
                for site_id, rows in ledger.waiting(conn, channel).items():
                    made += self._digest(conn, site_id, channel, rows, now)
            ledger.move_cursor(conn, ledger.DIGEST_MADE, now)
            # Once a day, like the digest: what is older than retention goes with the events.
            ledger.prune(conn, now - self.retention_seconds)
        return made

    def _digest(
        self,
        conn: Connection,
        site_id: int,
        channel: str,
        rows: list[ledger.Waiting],
        now: float,
    ) -> int:
        listed = [r for r in rows if not r.acknowledged]
        done = [r for r in rows if r.acknowledged]
        message = None
        if listed:
            message = ledger.add_message(
                conn,
                site_id=site_id,
                channel=channel,
                kind=DIGEST,
                now=now,
                alerts=len(listed),
                held=sum(r.held for r in listed),
                acknowledged=len(done),
            )
            ledger.settle(conn, listed, channel=channel, state=ledger.QUEUED, message_id=message)
        # Dealt with in the admin pages already: counted in the digest, never listed.
        ledger.settle(conn, done, channel=channel, state=ledger.ACKNOWLEDGED, message_id=message)
        return int(message is not None)

    # --- 3. delivery --------------------------------------------------------------------------

    def deliver(self, now: float) -> int:
        """Send what is due; how many messages went."""
        with self.engine.connect() as conn:
            due = ledger.due(conn, now, self._channels, DELIVERY_LIMIT)
        sent = 0
        if any(m.channel == EMAIL for m in due):
            sent += self._deliver_email([m for m in due if m.channel == EMAIL], now)
        if any(m.channel == WEBHOOK for m in due):
            sent += self._deliver_webhook([m for m in due if m.channel == WEBHOOK], now)
        return sent

    def _deliver_email(self, due: list[ledger.Message], now: float) -> int:
        smtp = self.settings.smtp
        assert smtp is not None  # due() only finds messages of the configured channels
        sent = 0
        with self._session(due, now, EMAIL) as attempt, ExitStack() as stack:
            mailer: Mailer | None = None  # opened for the first message that goes
            for message in due:
                draft = attempt(message)
                if draft is None:
                    continue
                to = self.settings.emails_for(draft.site)
                if not to:
                    self._cancel(message, "no email recipients for this school any more")
                    continue
                body = email_text(draft, self.style(draft.site))
                email = build(smtp, to, subject(draft), body, draft.site, time.time())
                try:
                    if mailer is None:
                        mailer = stack.enter_context(Mailer(smtp))
                    refused = mailer.send(email, to)
                except Refused as exc:
                    self._failed(message, str(exc), now, ", ".join(to))
                    continue
                except SmtpDown as exc:
                    raise _Down(str(exc), ", ".join(to)) from None
                note = "; ".join(f"refused {a}: {why}" for a, why in refused.items())
                self._delivered(message, now, ", ".join(to), note)
                sent += 1
        return sent

    def _deliver_webhook(self, due: list[ledger.Message], now: float) -> int:
        hook = self.settings.webhook
        assert hook is not None
        host = urlsplit(hook.url).netloc  # never the path: it may hold a key
        sent = 0
        with self._session(due, now, WEBHOOK) as attempt, Poster(hook) as poster:
            for message in due:
                draft = attempt(message)
                if draft is None:
                    continue
                if not self.settings.webhook_for(draft.site):
                    self._cancel(message, "the webhook is not for this school any more")
                    continue
                body = encode(webhook_payload(draft, self.style(draft.site), time.time()))
                try:
                    poster.post(body, str(message.id))
                except WebhookRefused as exc:
                    self._failed(message, str(exc), now, host)
                    continue
                except WebhookDown as exc:
                    raise _Down(str(exc), host) from None
                self._delivered(message, now, host)
                sent += 1
        return sent

    @contextmanager
    def _session(
        self, due: list[ledger.Message], now: float, channel: str
    ) -> Iterator[Callable[[ledger.Message], Draft | None]]:
        """One channel's run: yields ``attempt``, which claims a message and composes it
        (None: not this run's to send). When the channel goes down, the message being sent
        and every one not yet tried fail with the channel's error."""
        tried: set[int] = set()
        current: list[ledger.Message] = []

        def attempt(message: ledger.Message) -> Draft | None:
            tried.add(message.id)
            with self.engine.begin() as conn:
                if not ledger.claim(conn, message, now + LEASE):
                    return None
            current[:] = [message]
            draft = self._draft(message)
            if draft is None:
                self._cancel(message, "its alerts are gone (past retention)")
            return draft

        try:
            yield attempt
        except _Down as down:
            why, recipients = down.args
            log.warning("notifications by %s failed, tried again later: %s", channel, why)
            for message in current:
                self._failed(message, why, now, recipients, logged=False)
            for message in due:
                if message.id in tried:
                    continue
                with self.engine.begin() as conn:
                    if ledger.claim(conn, message, now + LEASE):
                        self._failed(message, why, now, recipients, logged=False)

    def _draft(self, message: ledger.Message) -> Draft | None:
        with self.engine.connect() as conn:
            alerts = ledger.message_alerts(conn, message.id)
            site = ledger.site_names(conn).get(message.site_id)
        if not alerts or site is None:
            return None
        return Draft(
            id=message.id,
            site=site,
            kind=message.kind,
            alerts=alerts,
            held=message.held,
            acknowledged=message.acknowledged,
            last_immediate=message.last_immediate,
        )

    def style(self, site: str) -> Style:
        """What a message to this school needs besides its alerts."""
        s = self.settings
        return Style(
            zone=self.zone,
            link=s.inbox_link(site),
            cap=s.max_immediate_per_day,
            digest_at=s.digest_at.strftime("%H:%M"),
        )

    # --- outcomes -----------------------------------------------------------------------------

    def _delivered(
        self, message: ledger.Message, now: float, recipients: str, note: str = ""
    ) -> None:
        with self.engine.begin() as conn:
            ledger.delivered(conn, message, now, recipients, note)
        self.metrics.notify_messages[message.channel, message.kind, "sent"].inc()
        if note:
            log.warning("notification %d: %s", message.id, note)

    def _failed(
        self,
        message: ledger.Message,
        why: str,
        now: float,
        recipients: str,
        logged: bool = True,
    ) -> None:
        retry = now + backoff(message.attempts + 1)
        with self.engine.begin() as conn:
            ledger.failed(conn, message, why, retry, recipients)
        self.metrics.notify_messages[message.channel, message.kind, "failed"].inc()
        if logged:
            log.warning(
                "notification %d by %s failed, tried again later: %s",
                message.id,
                message.channel,
                why,
            )

    def _cancel(self, message: ledger.Message, why: str) -> None:
        with self.engine.begin() as conn:
            ledger.cancelled(conn, message, why)
        self.metrics.notify_messages[message.channel, message.kind, "cancelled"].inc()
        log.warning("notification %d cancelled: %s", message.id, why)
