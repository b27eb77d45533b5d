"""``schoolgate-collector notify``: what the alert notifications sent, and a test message.

    schoolgate-collector notify log [--site NAME] [--limit N]   the newest messages and outcomes
    schoolgate-collector notify test --site NAME                a test message on each channel

``test`` sends at once, through the same SMTP session and webhook client as the collector's
job, so it checks the server, the certificate, the password and the secret before the first
real alert; it is not recorded among the messages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from schoolgate.server.cli_policy import Command
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.notify import ledger
from schoolgate.server.notify.compose import TEST, Draft, clean, email_text, subject
from schoolgate.server.notify.compose import webhook_payload as payload
from schoolgate.server.notify.mail import Mailer, Refused, SmtpDown, build
from schoolgate.server.notify.service import Notifier
from schoolgate.server.notify.webhook import Poster, WebhookDown, WebhookRefused, encode
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import load, local_zone

Wrap = Callable[[Command], Callable[[argparse.Namespace], int]]


def cmd_notify_log(args: argparse.Namespace, repo: SqlRepository) -> int:
    settings = load(args.config)
    zone = settings.timezone or local_zone()
    site_id = None
    if args.site:
        site_id = next((s.id for s in repo.sites() if s.name == args.site), None)
        if site_id is None:
            print(f"error: there is no site {args.site!r}", file=sys.stderr)
            return 1
    with repo.engine.connect() as conn:
        rows = ledger.recent(conn, args.limit, site_id)
    if not rows:
        print("no notification messages yet")
        return 0
    print(
        f"{'made':19}  {'site':20} {'channel':8} {'kind':9} {'alerts':>6}  "
        f"{'outcome':9} {'tries':>5}  to, or the last error"
    )
    for r in rows:
        made = datetime.fromtimestamp(r.created, zone).strftime("%Y-%m-%d %H:%M:%S")
        said = r.recipients
        if r.error:
            said = f"{said}: {r.error}" if said else r.error
        if r.next_attempt is not None and r.outcome != ledger.PENDING:
            retry = datetime.fromtimestamp(r.next_attempt, zone).strftime("%H:%M:%S")
            said += f" (next try {retry})"
        print(
            f"{made:19}  {r.site:20} {r.channel:8} {r.kind:9} {r.alerts:>6}  "
            f"{r.outcome:9} {r.attempts:>5}  {clean(said, 300)}"
        )
    return 0


def cmd_notify_test(args: argparse.Namespace, repo: SqlRepository) -> int:
    settings = load(args.config)
    notify = settings.notify
    if notify is None:
        print("error: the configuration has no [notify] section", file=sys.stderr)
        return 2
    if args.site not in {s.name for s in repo.sites()}:
        print(f"error: there is no site {args.site!r}", file=sys.stderr)
        return 1
    notifier = Notifier(
        repo.engine,
        notify,
        settings.timezone or local_zone(),
        settings.retention_seconds,
        CollectorMetrics(),  # a registry of its own: a test message is not an alert's
    )
    draft = Draft(id=0, site=args.site, kind=TEST, alerts=())
    style = notifier.style(args.site)
    to = notify.emails_for(args.site)
    hook = notify.webhook_for(args.site)
    if not to and not hook:
        print(f"error: no [[notify.recipients]] covers {args.site}", file=sys.stderr)
        return 1
    failed = False
    if to and notify.smtp is not None:
        email = build(
            notify.smtp, to, subject(draft), email_text(draft, style), args.site, time.time()
        )
        try:
            with Mailer(notify.smtp) as mailer:
                refused = mailer.send(email, to)
        except (SmtpDown, Refused) as exc:
            print(f"email to {', '.join(to)}: failed: {exc}")
            failed = True
        else:
            print(f"email to {', '.join(to)}: sent")
            for address, why in refused.items():
                print(f"  but refused for {address}: {why}")
                failed = True
    if hook and notify.webhook is not None:
        body = encode(payload(draft, style, time.time()))
        try:
            with Poster(notify.webhook) as poster:
                poster.post(body, "test")
        except (WebhookDown, WebhookRefused) as exc:
            print(f"webhook: failed: {exc}")
            failed = True
        else:
            print("webhook: sent")
    return 1 if failed else 0


def add_commands(commands: Any, with_config: Callable[[Any], Any], on_store: Wrap) -> None:
    """The ``notify`` commands, added to the CLI's parser."""
    notify = commands.add_parser("notify", help="alert notifications by email and webhook")
    sub = notify.add_subparsers(dest="notify_command", required=True)

    p = with_config(sub.add_parser("log", help="the newest messages and what became of them"))
    p.add_argument("--site", help="one school's messages only")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.set_defaults(func=on_store(cmd_notify_log))

    p = with_config(sub.add_parser("test", help="send a test message on each channel now"))
    p.add_argument("--site", required=True, help="the school whose recipients get it")
    p.set_defaults(func=on_store(cmd_notify_test))
