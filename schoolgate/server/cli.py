"""``schoolgate-collector``: the district's collector.

    schoolgate-collector init-db [--config FILE]        make the schema of an empty database
    schoolgate-collector migrate [--config FILE]        upgrade the schema to this version's
    schoolgate-collector site add NAME [--config FILE]  register a school; prints its token once
    schoolgate-collector site list [--config FILE]
    schoolgate-collector run [--config FILE] [--listen ADDR:PORT]
    schoolgate-collector config check [--config FILE]   load it as run does, open nothing
    schoolgate-collector policy|exception|request ...   the central policy (see cli_policy)
    schoolgate-collector user add|list|disable|token ... who signs in (see cli_users)
    schoolgate-collector notify log|test ...            alert notifications (see cli_notify)

Without ``--config`` every setting is its default: SQLite under the user's state directory
and the API on 127.0.0.1:8480.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from schoolgate import __version__
from schoolgate.agent.config import ConfigError, parse_address
from schoolgate.config_check import unusable_directory
from schoolgate.server import cli_notify, cli_policy, cli_users
from schoolgate.server.app import create_app
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import DatabaseUrlError, database_url, open_engine
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.notify.service import Notifier
from schoolgate.server.repository import SiteExists, SqlRepository
from schoolgate.server.settings import CollectorSettings, load, local_zone
from schoolgate.service_manager import ServiceManager

log = logging.getLogger("schoolgate.server")

_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_RETENTION_EVERY = 3600.0


def _settings(args: argparse.Namespace) -> CollectorSettings:
    settings = load(args.config)
    listen = getattr(args, "listen", None)
    if listen:
        try:
            host, port = parse_address(listen)
        except ValueError as exc:
            raise ConfigError("--listen", "", None, str(exc)) from None
        settings = dataclasses.replace(settings, listen=(host, port))
    return settings


@contextmanager
def _opened(settings: CollectorSettings, current: bool = True) -> Iterator[SqlRepository]:
    """The store, its schema checked to be this version's unless ``current`` is False; its
    connections are closed when the command is done."""
    engine = open_engine(settings.database_url)
    try:
        if current:
            migrate.check_current(engine)
        yield SqlRepository(engine)
    finally:
        engine.dispose()


def cmd_init_db(args: argparse.Namespace) -> int:
    with _opened(_settings(args), current=False) as repo:
        revision = migrate.init(repo.engine)
        print(f"database ready at revision {revision}: {repo.engine.url.render_as_string()}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with _opened(_settings(args), current=False) as repo:
        before, after = migrate.upgrade(repo.engine)
    if before == after:
        print(f"the database is at revision {after} already")
    else:
        print(f"database upgraded from revision {before or '(empty)'} to {after}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """``config check``, the unit's ``ExecStartPre=``: the settings as ``run`` loads them
    (every key, the notification secrets), and the SQLite database's directory, which ``run``
    makes when it is missing. Nothing is connected to: a PostgreSQL still starting is
    ``run``'s to wait for."""
    settings = _settings(args)
    shown = str(args.config) if args.config is not None else "(defaults)"
    url = database_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        path = Path(url.database)
        if path.parent == settings.state_dir:
            key, value = "server.state_dir", str(settings.state_dir)
        else:
            key, value = "database.url", url.render_as_string()
        problem = unusable_directory(path.parent)
        if problem is None and path.exists() and not os.access(path, os.R_OK | os.W_OK):
            problem = f"{path} cannot be read and written by this user"
        if problem is not None:
            raise ConfigError(shown, key, value, problem)
    host, port = settings.listen
    print(
        f"configuration OK: {shown} (API on {f'[{host}]' if ':' in host else host}:{port};"
        f" database {url.render_as_string()})"
    )
    return 0


def cmd_site_add(args: argparse.Namespace) -> int:
    name = args.name.strip().lower()
    if not _SITE_NAME.match(name):
        print(
            f"error: {args.name!r} is not a site name: use 1-64 lowercase letters, digits, "
            "dots, dashes or underscores, starting with a letter or digit",
            file=sys.stderr,
        )
        return 2
    with _opened(_settings(args)) as repo:
        try:
            _site, token = repo.add_site(name)
        except SiteExists as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"site {name} added. Its token, shown this once (keep it in the agent's token file):")
    print(token)
    return 0


def cmd_site_list(args: argparse.Namespace) -> int:
    with _opened(_settings(args)) as repo:
        sites = repo.sites()
    if not sites:
        print("no sites yet: add one with 'schoolgate-collector site add NAME'")
        return 0
    print(f"{'site':24} {'events':>12}  last batch")
    for site in sites:
        seen = (
            datetime.fromtimestamp(site.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if site.last_seen is not None
            else "never"
        )
        print(f"{site.name:24} {site.events:>12,}  {seen}")
    return 0


def _retention(repo: SqlRepository, settings: CollectorSettings) -> None:
    try:
        if repo.partitions is not None:
            repo.partitions.ahead()
        gone = repo.prune(time.time() - settings.retention_seconds)
    except SQLAlchemyError as exc:
        log.warning("retention job failed, tried again in an hour: %s", exc)
        return
    if gone:
        log.info("retention: removed %d %s", gone, "days" if repo.partitions else "events")


def _notifications(
    scheduler: BackgroundScheduler,
    repo: SqlRepository,
    settings: CollectorSettings,
    metrics: CollectorMetrics,
) -> None:
    """The alert notifications' job, with a [notify] section: its first run at once (it
    sends what waited while the collector was down), then every ``interval_seconds``."""
    notify = settings.notify
    if notify is None:
        return
    zone = settings.timezone or local_zone()
    notifier = Notifier(repo.engine, notify, zone, settings.retention_seconds, metrics)
    log.info("notifications: %s", notify.summary())
    known = {site.name for site in repo.sites()}
    for name in sorted({n for r in notify.recipients for n in r.sites} - known - {"*"}):
        log.warning("notify.recipients names %s, which is not a registered site", name)
    scheduler.add_job(
        notifier.run_logged,
        "interval",
        seconds=notify.interval_seconds,
        id="notify",
        next_run_time=datetime.now(UTC),
        # A run slowed by a mail server that does not answer is not run twice at once.
        max_instances=1,
        coalesce=True,
    )


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _opened(settings) as repo:
        return _serve(repo, settings)


def _serve(repo: SqlRepository, settings: CollectorSettings) -> int:
    metrics = CollectorMetrics()
    for site in repo.sites():
        if site.last_seen is not None:
            metrics.seen(site.name, site.last_seen)
    _retention(repo, settings)
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        _retention, "interval", seconds=_RETENTION_EVERY, args=(repo, settings), id="retention"
    )
    _notifications(scheduler, repo, settings, metrics)
    scheduler.start()
    host, port = settings.listen
    log.info(
        "collector %s on http://%s:%d (database %s)",
        __version__,
        f"[{host}]" if ":" in host else host,
        port,
        repo.engine.url.render_as_string(),
    )
    config = uvicorn.Config(
        create_app(repo, settings, metrics),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    try:
        _Server(config, ServiceManager()).run()
    finally:
        scheduler.shutdown(wait=False)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, telling systemd when it listens and when it stops."""

    def __init__(self, config: uvicorn.Config, service: ServiceManager) -> None:
        super().__init__(config)
        self.service = service

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # not when the address could not be bound: uvicorn then exits
            self.service.ready(f"serving on {self.config.host}:{self.config.port}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.stopping()
        await super().shutdown(sockets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolgate-collector", description="The district collector for schoolgate agents."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="the collector's TOML configuration")
        return p

    run = with_config(commands.add_parser("run", help="serve the API"))
    run.add_argument("--listen", metavar="ADDR:PORT", help="replaces server.listen")
    run.set_defaults(func=cmd_run)
    config = commands.add_parser("config", help="check the configuration before a start")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    with_config(
        config_commands.add_parser(
            "check", help="load the configuration as run does, without opening the database"
        )
    ).set_defaults(func=cmd_config_check)
    with_config(commands.add_parser("init-db", help="make the schema")).set_defaults(
        func=cmd_init_db
    )
    with_config(commands.add_parser("migrate", help="upgrade the schema")).set_defaults(
        func=cmd_migrate
    )
    site = commands.add_parser("site", help="the schools that send events")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    add = with_config(site_commands.add_parser("add", help="register a school, print its token"))
    add.add_argument("name")
    add.set_defaults(func=cmd_site_add)
    with_config(site_commands.add_parser("list", help="the schools and their events")).set_defaults(
        func=cmd_site_list
    )
    cli_policy.add_commands(commands, with_config, _on_store)
    cli_users.add_commands(commands, with_config, _on_store)
    cli_notify.add_commands(commands, with_config, _on_store)
    return parser


def _on_store(command: cli_policy.Command) -> Callable[[argparse.Namespace], int]:
    """A command that works on the store, as a command of the parser."""

    def run(args: argparse.Namespace) -> int:
        with _opened(_settings(args)) as repo:
            return command(args, repo)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The commands say what the migrations did in a line of their own.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (ConfigError, DatabaseUrlError, migrate.SchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: the database failed: {getattr(exc, 'orig', None) or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
