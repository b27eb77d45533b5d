"""``schoolgate-collector policy``, ``exception`` and ``request``: the central policy from the
command line.

    policy set [--site SITE] FILE --reason TEXT     a new revision of a policy document
    policy show [--site SITE] [--effective]         the document in force (or the merged one)
    policy history [--site SITE]                    who changed it, when and why
    exception add SITE NAME --group G [--device MAC|IP] --for 2h --reason TEXT [--block]
    exception list SITE
    exception revoke SITE ID
    request list SITE [--status pending|approved|refused|all]
    request approve SITE ID --for 2h --note TEXT [--group G] [--device]
    request refuse SITE ID --note TEXT

Every change is recorded with who made it (``--by``, the login name by default) and why.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from schoolgate.agent.policy.exceptions import parse_duration, whom
from schoolgate.server.db.schema import UnblockRequest
from schoolgate.server.policies import PolicyError, PolicyStore
from schoolgate.server.repository import SiteRef, SqlRepository

Command = Callable[[argparse.Namespace, SqlRepository], int]
Wrap = Callable[[Command], Callable[[argparse.Namespace], int]]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _site(repo: SqlRepository, name: str | None) -> SiteRef | None:
    """The site called ``name``; None for no name (the district). ``LookupError`` if unknown."""
    if name is None:
        return None
    found = PolicyStore(repo.engine).site_named(name)
    if found is None:
        raise LookupError(f"no site {name!r}: 'schoolgate-collector site list' shows them")
    return found


def _fail(message: str, status: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise PolicyError(f"--for {text!r}: {exc}") from None


def cmd_policy_set(args: argparse.Namespace, repo: SqlRepository) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read {args.file}: {exc}", 2)
    site = _site(repo, args.site)
    revision = PolicyStore(repo.engine).save(site, text, args.by, args.reason)
    scope = "the district" if site is None else site.name
    print(f"revision {revision.id} of the policy of {scope} is in force")
    print("agents take it within their policy_interval (a minute by default)")
    return 0


def cmd_policy_show(args: argparse.Namespace, repo: SqlRepository) -> int:
    store = PolicyStore(repo.engine)
    site = _site(repo, args.site)
    if args.effective:
        if site is None:
            return _fail("--effective needs --site: the policy a school's agents get", 2)
        body, _etag = store.for_agent(site)
        print(json.dumps(json.loads(body), indent=2, ensure_ascii=False))
        return 0
    current = store.current(None if site is None else site.id)
    if current is None:
        print("# no policy document yet")
        return 0
    print(f"# revision {current.id}, {_when(current.created)}, by {current.author}: ")
    print(f"# {current.reason}")
    print(current.text, end="" if current.text.endswith("\n") else "\n")
    return 0


def cmd_policy_history(args: argparse.Namespace, repo: SqlRepository) -> int:
    site = _site(repo, args.site)
    found = PolicyStore(repo.engine).history(None if site is None else site.id, args.limit)
    if not found:
        print("no revisions yet")
    for rev in found:
        print(f"{rev.id:>6}  {_when(rev.created)}  {rev.author:20}  {rev.reason}")
    return 0


def cmd_exception_add(args: argparse.Namespace, repo: SqlRepository) -> int:
    site = _site(repo, args.site)
    assert site is not None
    granted = PolicyStore(repo.engine).grant(
        site,
        args.name,
        args.group,
        "block" if args.block else "allow",
        _duration(args.duration),
        args.reason,
        args.by,
        device=args.device,
    )
    print(
        f"exception {granted.id}: {granted.action} {granted.name} for "
        f"{whom(granted.group, granted.device)} at "
        f"{site.name} until {_when(granted.expires)}; the agent applies it within a minute"
    )
    return 0


def cmd_exception_list(args: argparse.Namespace, repo: SqlRepository) -> int:
    site = _site(repo, args.site)
    assert site is not None
    found = PolicyStore(repo.engine).live_exceptions(site.id)
    if not found:
        print(f"no exceptions in force at {site.name}")
    for x in found:
        print(
            f"{x.id}  {x.action:5}  {x.name:40}  {whom(x.group, x.device):12}  "
            f"until {_when(x.expires)}  "
            f"{x.author}: {x.reason}"
        )
    return 0


def cmd_exception_revoke(args: argparse.Namespace, repo: SqlRepository) -> int:
    site = _site(repo, args.site)
    assert site is not None
    if not PolicyStore(repo.engine).revoke(site, args.id, args.by):
        return _fail(f"no exception {args.id} in force at {site.name}")
    print(f"exception {args.id} revoked; the agent drops it within a minute")
    return 0


def cmd_request_list(args: argparse.Namespace, repo: SqlRepository) -> int:
    site = _site(repo, args.site)
    assert site is not None
    r = UnblockRequest.__table__.c
    query = select(UnblockRequest.__table__).where(r.site_id == site.id)
    if args.status != "all":
        query = query.where(r.status == args.status)
    query = query.order_by(r.created.desc()).limit(args.limit)
    with repo.engine.connect() as conn:
        rows = list(conn.execute(query))
    if not rows:
        print(f"no {'' if args.status == 'all' else args.status + ' '}requests at {site.name}")
    for row in rows:
        # Names and reasons come from the network: repr() shows any control character.
        print(
            f"{row.id}  {_when(row.created)}  {row.status:8}  {row.grp:12}  {row.client_ip:15}  "
            f"{row.name!r}  {row.reason!r}"
        )
    return 0


def _decide(args: argparse.Namespace, repo: SqlRepository, approve: bool) -> int:
    site = _site(repo, args.site)
    assert site is not None
    seconds = _duration(args.duration) if approve else 0
    decision = PolicyStore(repo.engine).decide(
        site,
        args.id,
        approve,
        args.by,
        args.note,
        seconds,
        getattr(args, "group", None),
        getattr(args, "device", False),
    )
    if decision.exception is not None:
        x = decision.exception
        print(
            f"request {args.id} approved: {x.name} allowed for {whom(x.group, x.device)} until "
            f"{_when(x.expires)} (exception {x.id})"
        )
    else:
        print(f"request {args.id} refused")
    return 0


def cmd_request_approve(args: argparse.Namespace, repo: SqlRepository) -> int:
    return _decide(args, repo, True)


def cmd_request_refuse(args: argparse.Namespace, repo: SqlRepository) -> int:
    return _decide(args, repo, False)


def guarded(command: Command) -> Command:
    """The command, with the errors a person can fix said plainly."""

    def run(args: argparse.Namespace, repo: SqlRepository) -> int:
        try:
            return command(args, repo)
        except (PolicyError, LookupError) as exc:
            return _fail(str(exc).strip("'\""))
        except tomllib.TOMLDecodeError as exc:
            return _fail(str(exc))

    return run


def add_commands(commands: Any, with_config: Callable[[Any], Any], on_store: Wrap) -> None:
    """The ``policy``, ``exception`` and ``request`` commands, added to the CLI's parser."""

    def command(parent: Any, name: str, help_text: str, func: Command) -> Any:
        p = with_config(parent.add_parser(name, help=help_text))
        p.set_defaults(func=on_store(guarded(func)))
        return p

    def by(p: Any) -> None:
        p.add_argument("--by", default=getpass.getuser(), help="who makes the change")

    policy = commands.add_parser("policy", help="the district's and each school's policy")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    p = command(sub, "set", "store a new revision of a policy document", cmd_policy_set)
    p.add_argument("file", help="the document: [site], [policy], [[schedules]], [[groups]]")
    p.add_argument("--site", help="the school's own document (default: the district's)")
    p.add_argument("--reason", required=True, help="why: kept with the revision")
    by(p)
    p = command(sub, "show", "the document in force", cmd_policy_show)
    p.add_argument("--site")
    p.add_argument("--effective", action="store_true", help="what the school's agents get")
    p = command(sub, "history", "the revisions, newest first", cmd_policy_history)
    p.add_argument("--site")
    p.add_argument("--limit", type=int, default=50)

    exception = commands.add_parser("exception", help="exceptions granted centrally")
    sub = exception.add_subparsers(dest="exception_command", required=True)
    p = command(sub, "add", "allow (or block) a name for a group, for a while", cmd_exception_add)
    p.add_argument("site")
    p.add_argument("name")
    p.add_argument("--group", required=True)
    p.add_argument(
        "--device",
        default="",
        metavar="MAC|IP",
        help="only this device of the group, by MAC address (best) or IP address",
    )
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION")
    p.add_argument("--reason", required=True)
    p.add_argument("--block", action="store_true", help="block the name instead of allowing it")
    by(p)
    p = command(sub, "list", "the exceptions in force at a school", cmd_exception_list)
    p.add_argument("site")
    p = command(sub, "revoke", "end an exception now", cmd_exception_revoke)
    p.add_argument("site")
    p.add_argument("id")
    by(p)

    request = commands.add_parser("request", help="unblock requests from the block pages")
    sub = request.add_subparsers(dest="request_command", required=True)
    p = command(sub, "list", "a school's requests, newest first", cmd_request_list)
    p.add_argument("site")
    p.add_argument("--status", choices=("pending", "approved", "refused", "all"), default="pending")
    p.add_argument("--limit", type=int, default=100)
    p = command(sub, "approve", "allow the name for the request's group", cmd_request_approve)
    p.add_argument("site")
    p.add_argument("id")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION")
    p.add_argument("--note", required=True, help="why: kept with the decision")
    p.add_argument("--group", help="another group than the one the request came from")
    p.add_argument(
        "--device",
        action="store_true",
        help="only for the device that asked (its MAC address, else its IP address)",
    )
    by(p)
    p = command(sub, "refuse", "refuse a request", cmd_request_refuse)
    p.add_argument("site")
    p.add_argument("id")
    p.add_argument("--note", required=True, help="why: kept with the decision")
    by(p)
