"""``schoolgate-agent``: run the agent, explain a decision, compile the lists."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import logging
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnslib import QTYPE

from schoolgate import __version__
from schoolgate.agent import cli_lists, cli_log, cli_policy, cli_requests
from schoolgate.agent import config as config_mod
from schoolgate.agent.app import Agent, StartupError, block_settings, client_identifier
from schoolgate.agent.config import AgentConfig, ConfigError, ConfigLoader, parse_address
from schoolgate.agent.dns.synth import BlockResponse, BlockSettings, block_addresses
from schoolgate.agent.dns.upstream import parse_upstream
from schoolgate.agent.dns.wire import Query, parse_query, text_to_wire, wire_to_text
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.filter.sources import BuildError
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.lists import list_sources
from schoolgate.agent.policy import categories as taxonomy_mod
from schoolgate.agent.policy.categories import LANGUAGES
from schoolgate.agent.policy.central import CentralPolicy
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.exceptions import (
    ExceptionError,
    ExceptionStore,
    normalize_device,
    parse_duration,
    whom,
)
from schoolgate.agent.policy.identity import read_devices
from schoolgate.agent.policy.schedules import active_schedules
from schoolgate.config_check import unreadable_file, unusable_directory

log = logging.getLogger("schoolgate.agent")

_FILE_LIMIT = 65_536
EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _upstream(text: str) -> str:
    try:
        parse_upstream(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    try:
        return normalize_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _allow(
    config: AgentConfig,
    name: str,
    group: str,
    seconds: int,
    reason: str,
    by: str,
    device: str = "",
) -> int:
    try:
        text = normalize(name)
    except InvalidName as exc:
        print(f"{name!r} is not a name the filter can match: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    groups = [g.name for g in config.groups]
    if group not in groups:
        print(
            f"schoolgate-agent: no group {group!r} in {config.source}; its groups are"
            f" {', '.join(groups)} (give the agent's configuration with --config)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        entry = ExceptionStore(config.state_dir).add(
            text, group, "allow", seconds, reason, by, device
        )
    except (OSError, ExceptionError) as exc:
        print(f"schoolgate-agent: cannot store the exception: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    until = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(entry.expires))
    who = whom(entry.group, entry.device)
    print(f"exception {entry.id}: {text} allowed for {who} until {until}")
    print("a running agent applies it within a second; locked categories stay blocked")
    return 0


def _exceptions(config: AgentConfig, command: str, exception_id: str) -> int:
    store = ExceptionStore(config.state_dir)
    try:
        if command == "remove":
            if not store.remove(exception_id):
                print(f"no exception {exception_id!r} in force", file=sys.stderr)
                return EXIT_CONFIG
            print(f"exception {exception_id} removed")
            return 0
        entries = store.load()
    except (OSError, ExceptionError) as exc:
        print(f"schoolgate-agent: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if not entries:
        print("no exceptions in force")
    for e in entries:
        until = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(e.expires))
        reason = f" ({e.reason})" if e.reason else ""
        who = whom(e.group, e.device)
        print(f"{e.id}  {e.action} {e.name} for {who} until {until}, by {e.by}{reason}")
    return 0


def _moment(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'YYYY-MM-DD HH:MM'") from None


def _list(text: str) -> tuple[str, Path]:
    category, sep, path = text.partition("=")
    if not sep or not category or not path:
        raise argparse.ArgumentTypeError("expected CATEGORY=FILE, e.g. adult=adult.txt")
    return category, Path(path).resolve()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolgate-agent",
        description="DNS filtering proxy and activity logger for a school network.",
    )
    parser.add_argument("--version", action="version", version=f"schoolgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="the TOML configuration (default: the bundled configuration)",
        )
        p.add_argument(
            "--list",
            dest="lists",
            action="append",
            type=_list,
            default=[],
            metavar="CATEGORY=FILE",
            help="add a list file to CATEGORY, a category of the taxonomy or a new one blocked"
            " for everyone (repeatable)",
        )
        p.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help="the agent's state: compiled lists, the activity log, exceptions",
        )
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    run = sub.add_parser("run", help="run the DNS service in the foreground")
    config_arg(run)
    run.add_argument(
        "--listen",
        action="append",
        type=_address,
        default=[],
        metavar="ADDR:PORT",
        help="listen on this address, UDP and TCP (repeatable; replaces server.listen)",
    )
    run.add_argument(
        "--upstream",
        action="append",
        type=_upstream,
        default=[],
        metavar="URL",
        help="udp://, tcp:// or tls:// upstream (repeatable; replaces upstream.servers)",
    )
    run.add_argument(
        "--metrics",
        type=_address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics here (replaces metrics.listen)",
    )
    run.add_argument(
        "--collector", metavar="URL", help="ship events to this collector (collector.url)"
    )
    run.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the site's token for the collector (collector.token_file)",
    )
    run.add_argument(
        "--site", metavar="NAME", help="the site's name on the collector (collector.site)"
    )

    config_cmd = sub.add_parser("config", help="check the configuration before a start")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    config_arg(
        config_sub.add_parser(
            "check",
            help="load the configuration as run does, and check the files it names, without"
            " starting anything (exit 2 when run would refuse it)",
        )
    )

    check = sub.add_parser("check", help="explain what the filter does with a name")
    config_arg(check)
    check.add_argument("name")
    check.add_argument("--client", default="127.0.0.1", metavar="IP")
    check.add_argument("--type", default="A", metavar="TYPE")
    check.add_argument(
        "--at",
        type=_moment,
        metavar="'YYYY-MM-DD HH:MM'",
        help="decide as at this moment, in the site's time zone (default: now)",
    )

    allow = sub.add_parser(
        "allow", help="let a name through for one group, or one device of it, for a while"
    )
    config_arg(allow)
    allow.add_argument("name")
    allow.add_argument("--group", required=True, metavar="GROUP")
    allow.add_argument(
        "--device",
        default="",
        metavar="MAC|IP",
        type=_device,
        help="only this device of the group, by MAC address (best) or IP address",
    )
    allow.add_argument("--for", dest="duration", required=True, metavar="DURATION", type=_duration)
    allow.add_argument("--reason", default="", metavar="TEXT")
    allow.add_argument("--by", default=_operator(), metavar="WHO", help="(default: your login)")

    exceptions = sub.add_parser("exceptions", help="list or remove exceptions in force")
    exceptions_sub = exceptions.add_subparsers(dest="exceptions_command", required=True)
    config_arg(exceptions_sub.add_parser("list", help="the exceptions in force"))
    remove = exceptions_sub.add_parser("remove", help="end an exception now")
    config_arg(remove)
    remove.add_argument("id")

    cats = sub.add_parser("categories", help="the categories and what this configuration does")
    config_arg(cats)
    cats.add_argument("--language", default="en", choices=LANGUAGES)

    lists = sub.add_parser("lists", help="manage the lists and their sources")
    lists_sub = lists.add_subparsers(dest="lists_command", required=True)
    compile_ = lists_sub.add_parser("compile", help="compile the configured lists now")
    config_arg(compile_)
    update = lists_sub.add_parser(
        "update", help="download every source now, compile and put the build in service"
    )
    config_arg(update)
    update.add_argument(
        "--force",
        action="store_true",
        help="accept downloads that lost more than updates.max_shrink of their entries",
    )
    status = lists_sub.add_parser("status", help="each source's last update, and the build")
    config_arg(status)
    status.add_argument("--format", default="text", choices=["text", "json"])
    sources = lists_sub.add_parser("sources", help="the catalogue of public sources")
    config_arg(sources)

    log_ = sub.add_parser("log", help="search the activity log: queries, alerts, devices")
    config_arg(log_)
    cli_log.add_arguments(log_)

    requests = sub.add_parser("requests", help="the unblock requests sent from the block page")
    config_arg(requests)
    cli_requests.add_arguments(requests)

    policy = sub.add_parser("policy", help="what each group gets, and the filtering check")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    show = policy_sub.add_parser("show", help="every group's action for every category")
    config_arg(show)
    test = policy_sub.add_parser(
        "test", help="check one name per category through the filter, for every group"
    )
    config_arg(test)
    cli_policy.add_arguments(show, test, moment=_moment)
    return parser


def _loader(args: argparse.Namespace) -> ConfigLoader:
    def overrides(raw: dict[str, Any]) -> None:
        server = raw.setdefault("server", {})
        if getattr(args, "listen", None):
            server["listen"] = list(args.listen)
        if getattr(args, "upstream", None):
            raw.setdefault("upstream", {})["servers"] = list(args.upstream)
        if getattr(args, "metrics", None):
            raw.setdefault("metrics", {})["listen"] = args.metrics
        collector = {
            "url": getattr(args, "collector", None),
            "site": getattr(args, "site", None),
            "token_file": (
                str(args.token_file.resolve()) if getattr(args, "token_file", None) else None
            ),
        }
        for key, value in collector.items():
            if value:
                raw.setdefault("collector", {})[key] = value
        if args.state_dir is not None:
            server["state_dir"] = str(args.state_dir.resolve())
        known = taxonomy_mod.bundled()
        defined = {c.get("id") for c in raw.get("categories", []) if isinstance(c, dict)}
        for category, path in args.lists:
            if category not in known and category not in defined:
                # A quick-start category of the operator's own: blocked for everyone.
                raw.setdefault("categories", []).append(
                    {"id": category, "tier": "age-appropriate", "name": category}
                )
                defined.add(category)
            raw.setdefault("lists", []).append(
                {"name": f"{category}:{path}", "category": category, "path": str(path)}
            )

    def load(candidate: CentralPolicy | None = None, /) -> AgentConfig:
        return config_mod.load(args.config, overrides, candidate)

    return load


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``| head``): what it wanted was shown. Quiet the flush at exit,
        # and end as a process killed by SIGPIPE would, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    load = _loader(args)
    try:
        if args.command == "run":
            return _run(load)
        if args.command == "config":
            return _config_check(load())
        if args.command == "check":
            return _check(load(), args.name, args.client, args.type, args.at)
        if args.command == "allow":
            return _allow(
                load(), args.name, args.group, args.duration, args.reason, args.by, args.device
            )
        if args.command == "exceptions":
            return _exceptions(load(), args.exceptions_command, getattr(args, "id", ""))
        if args.command == "categories":
            return cli_lists.categories(load(), args.language)
        if args.command == "log":
            return cli_log.run(load(), args)
        if args.command == "requests":
            return cli_requests.run(load(), args.format, args.pending, args.limit)
        if args.command == "policy":
            return cli_policy.run(args, load(), _open_lists)
        return _lists_command(args, load())
    except ConfigError as exc:
        print(f"schoolgate-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StartupError, BuildError, CompiledListError) as exc:
        print(f"schoolgate-agent: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def _lists_command(args: argparse.Namespace, config: AgentConfig) -> int:
    command = args.lists_command
    if command == "compile":
        return cli_lists.compile_lists(config)
    if command == "update":
        return cli_lists.update_lists(config, args.force)
    if command == "status":
        return cli_lists.status(config, args.format)
    return cli_lists.sources(config)


def _config_check(config: AgentConfig) -> int:
    """``config check``, the unit's ``ExecStartPre=``: ``load`` has checked every key and the
    files a start cannot do without (the collector's token, list files). What is left is
    what ``run`` opens later: the state directory, which it cannot start without, and files
    it carries on without (a lease file the DHCP server has not written yet), which are
    warnings."""
    problem = unusable_directory(config.state_dir)
    if problem is not None:
        raise ConfigError(config.source, "server.state_dir", str(config.state_dir), problem)
    named = [
        (f"identity.lease_files[{i}]", path) for i, path in enumerate(config.identity.lease_files)
    ]
    if config.upstream_ca_file is not None:
        named.append(("upstream.tls_ca_file", config.upstream_ca_file))
    named += [(f"lists ({entry.name})", entry.path) for entry in config.lists]
    for key, path in named:
        problem = unreadable_file(path)
        if problem is not None:
            warning = ConfigError(config.source, key, str(path), problem)
            print(f"schoolgate-agent: warning: {warning}", file=sys.stderr)
    listen = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in config.listen)
    print(f"configuration OK: {config.source} (DNS on {listen}; state in {config.state_dir})")
    return 0


def _raise_file_limit() -> None:
    """Take the hard limit on open files as the soft one. TCP clients, upstream connections
    and the block page's visitors each hold a descriptor, and the soft limit systemd and most
    shells give (1024) is the first thing a busy school would run into."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, _FILE_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _run(load: ConfigLoader) -> int:
    _install_uvloop()
    _raise_file_limit()

    async def serve() -> None:
        agent = Agent(load)
        await agent.start()
        await agent.run_until_stopped()

    asyncio.run(serve())
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:  # pragma: no cover - uvloop is a dependency but optional at run time
        log.info("uvloop not installed; using the standard event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _open_lists(config: AgentConfig, scratch: Path) -> tuple[CompiledLists, bool]:
    """The agent's current build if it matches the configuration, else a fresh one in
    ``scratch``: ``check`` never changes what a running agent has on disk. The flag says
    which."""
    sources = list_sources(config)
    lists = ListStore(config.state_dir).open_current(sources)
    if lists is not None:
        return lists, False
    lists, _report = asyncio.run(ListStore(scratch).compile(sources))
    return lists, True


def _check(
    config: AgentConfig,
    name: str,
    client_ip: str,
    qtype_name: str,
    at: dt.datetime | None = None,
) -> int:
    try:
        text = normalize(name)
    except InvalidName as exc:
        print(f"{name!r} is not a name the filter can match: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    qtype = _qtype(qtype_name)
    if qtype is None:
        print(f"unknown record type {qtype_name!r}", file=sys.stderr)
        return EXIT_CONFIG
    query = _synthetic_query(text, qtype)
    identity = config.identity
    moment = at or config.local_now()
    active = active_schedules(config.schedules, moment)
    devices = read_devices(identity.neighbours, identity.lease_files)
    exceptions = cli_policy.exceptions_at(config, moment, exact=at is not None)
    client = client_identifier(config, devices, active, exceptions).identify(client_ip)
    print(f"name:     {text}.")
    print(f"type:     {qtype_name.upper()}")
    if config.schedules:
        on = ", ".join(sorted(active)) or "none"
        print(f"time:     {moment:%Y-%m-%d %H:%M} (schedules on: {on})")
    if client is None:
        print(f"client:   {client_ip} is outside the client networks")
        print("decision: refused (the agent is not an open resolver)")
        return 0
    tier = next(g.age_tier for g in config.groups if g.name == client.group.name)
    if client.mac or client.hostname:
        print(f"device:   MAC {client.mac or 'unknown'}, DHCP name {client.hostname or 'unknown'}")
    print(f"client:   {client.address} (group {client.group.name}, age tier {tier.value})")
    with tempfile.TemporaryDirectory(prefix="schoolgate-check-") as scratch:
        lists, fresh = _open_lists(config, Path(scratch))
        decision = Decider(lists, config.taxonomy).explain(client.group, query.qname, query.labels)
        print(f"decision: {decision.action.value}")
        if decision.category in config.taxonomy:
            category = config.taxonomy[str(decision.category)]
            print(f"category: {category.id} ({category.name()}, tier {category.tier.value})")
            print(f"entry:    {decision.entry}")
        elif decision.entry is not None:
            print(f"reason:   {decision.rule}")
            print(f"entry:    {decision.entry}")
        for source in lists.sources:
            if source.name in decision.lists:
                print(f"list:     {source.name} ({source.origin})")
        if decision.blocked:
            print(f"answer:   {_blocked_answer(block_settings(config), qtype)}")
        elif decision.rewrite is not None:
            target = wire_to_text(decision.rewrite)
            print(f"answer:   CNAME {target} and its own records, resolved upstream")
        if decision.alert:
            print("alert:    raised for the safeguarding lead")
        if decision.entry is None:
            print(f"reason:   {decision.rule}")
        where = "in service"
        if fresh:
            has_build = ListStore(config.state_dir).current.exists()
            why = (
                "the agent's build is of other lists" if has_build else "the agent has no build yet"
            )
            where = f"compiled for this check: {why}"
        print(f"lists:    build {lists.build_id}, {lists.count} names ({where})")
        lists.close()
    return 0


def _blocked_answer(settings: BlockSettings, qtype: int) -> str:
    """What a client asking ``qtype`` gets for a blocked name, in words."""
    ttl = f"TTL {settings.ttl} s"
    if settings.response is BlockResponse.NXDOMAIN:
        return f"NXDOMAIN ({ttl})"
    addresses = block_addresses(settings, qtype)
    if addresses:
        return f"{', '.join(addresses)} ({ttl})"
    return f"NODATA: no records of this type, with an SOA ({ttl})"


def _qtype(name: str) -> int | None:
    try:
        return int(QTYPE.reverse[name.upper()]) if not name.isdigit() else int(name)
    except KeyError:
        return None


def _synthetic_query(name: str, qtype: int) -> Query:
    wire = text_to_wire(name)
    data = (
        b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + wire
        + qtype.to_bytes(2, "big")
        + b"\x00\x01"
    )
    return parse_query(data)


if __name__ == "__main__":
    sys.exit(main())
