"""``schoolgate-collector user``: the people who sign in to the collector.

    user add NAME --role ROLE [--site SITE ...] [--password-file FILE]
    user list
    user disable NAME                    ends their sessions and tokens at once
    user token NAME [--label L] [--expires 90d]   an API token for a script, printed once

The password is asked for twice at the terminal (it is never an argument: arguments show in
the process list and the shell's history), or read from the first line of ``--password-file``
for an automated set-up.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schoolgate.agent.policy.exceptions import parse_duration
from schoolgate.server.auth import Role
from schoolgate.server.passwords import problem
from schoolgate.server.repository import SqlRepository
from schoolgate.server.users import CredentialKind, UserError, UserStore

Command = Callable[[argparse.Namespace, SqlRepository], int]
Wrap = Callable[[Command], Callable[[argparse.Namespace], int]]


def _fail(message: str, status: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _when(seconds: float | None, never: str = "never") -> str:
    if seconds is None:
        return never
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _password(args: argparse.Namespace) -> str | None:
    """The new user's password, or None after saying why there is none."""
    if args.password_file is not None:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read {args.password_file}: {exc}")
            return None
        lines = text.splitlines()
        return lines[0] if lines else ""
    first = getpass.getpass(f"password for {args.name}: ")
    weak = problem(first)
    if weak is not None:
        _fail(weak)
        return None
    if getpass.getpass("the same password again: ") != first:
        _fail("the two passwords differ")
        return None
    return first


def cmd_user_add(args: argparse.Namespace, repo: SqlRepository) -> int:
    users = UserStore(repo.engine)
    role = Role(args.role)
    try:
        users.check(args.name, role, args.site)
        password = _password(args)
        if password is None:
            return 2
        user = users.add(args.name, password, role, args.site)
    except UserError as exc:
        return _fail(str(exc), 2)
    where = ", ".join(user.sites) if user.sites else "every site"
    print(f"user {user.name} added: {user.role}, sees {where}")
    return 0


def cmd_user_list(_args: argparse.Namespace, repo: SqlRepository) -> int:
    users = UserStore(repo.engine).users()
    if not users:
        print("no users yet: add one with 'schoolgate-collector user add NAME --role admin'")
        return 0
    print(f"{'user':24} {'role':18} {'status':9} {'last sign-in':21} sites")
    for user in users:
        print(
            f"{user.name:24} {user.role:18} {'disabled' if user.disabled else 'active':9} "
            f"{_when(user.last_login):21} {', '.join(user.sites) or '(all)'}"
        )
    return 0


def cmd_user_disable(args: argparse.Namespace, repo: SqlRepository) -> int:
    try:
        UserStore(repo.engine).disable(args.name)
    except UserError as exc:
        return _fail(str(exc))
    print(f"user {args.name.strip().lower()} disabled: their sessions and tokens no longer work")
    return 0


def cmd_user_token(args: argparse.Namespace, repo: SqlRepository) -> int:
    lifetime: float | None = None
    if args.expires is not None:
        try:
            lifetime = parse_duration(args.expires)
        except ValueError as exc:
            return _fail(f"--expires {args.expires!r}: {exc}", 2)
    try:
        issued = UserStore(repo.engine).issue(args.name, CredentialKind.API, args.label, lifetime)
    except UserError as exc:
        return _fail(str(exc))
    print(
        f"API token for {args.name.strip().lower()}, valid "
        f"{'until ' + _when(issued.expires) if issued.expires else 'until the user is disabled'}"
        ". Shown this once:"
    )
    print(issued.token)
    return 0


def add_commands(commands: Any, with_config: Callable[[Any], Any], on_store: Wrap) -> None:
    """The ``user`` commands, added to the CLI's parser."""
    user = commands.add_parser("user", help="the people who sign in to the collector")
    sub = user.add_subparsers(dest="user_command", required=True)

    p = with_config(sub.add_parser("add", help="add a user; asks for the password"))
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument(
        "--site",
        action="append",
        default=[],
        help="a site the user belongs to (again for more); none for an admin",
    )
    p.add_argument("--password-file", type=Path, help="read the password from this file")
    p.set_defaults(func=on_store(cmd_user_add))

    p = with_config(sub.add_parser("list", help="the users, their roles and sites"))
    p.set_defaults(func=on_store(cmd_user_list))

    p = with_config(sub.add_parser("disable", help="disable a user and end their sessions"))
    p.add_argument("name")
    p.set_defaults(func=on_store(cmd_user_disable))

    p = with_config(sub.add_parser("token", help="an API token for a script; printed once"))
    p.add_argument("name")
    p.add_argument("--label", default="", help="what the token is for, kept with it")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 90d; by default it never expires")
    p.set_defaults(func=on_store(cmd_user_token))
