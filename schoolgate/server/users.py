"""The people who sign in to the collector, their sites, and their tokens.

``UserStore`` keeps users (a role and, unless an admin, the sites they belong to) and their
credentials: sessions made by signing in with a password, and API tokens for scripts made
with ``schoolgate-collector user token``. A token is ``sgu_`` and 256 random bits, shown
once; the database keeps its SHA-256 only, as for site tokens. Every request looks its token
up again, so a disabled user or a revoked token stops working at once, even when another
process (the command line) made the change.

Every method is synchronous and may be slow (a password check takes a good part of a
second): the web app calls them in worker threads.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, cast

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from schoolgate.server.auth import USER_PREFIX, Principal, Role
from schoolgate.server.db.schema import Credential, Site, User, UserSite
from schoolgate.server.passwords import Passwords, problem
from schoolgate.server.tokens import token_hash

_users = cast(Table, User.__table__)
_user_sites = cast(Table, UserSite.__table__)
_credentials = cast(Table, Credential.__table__)
_sites = cast(Table, Site.__table__)

USER_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")
MAX_LABEL: Final = 64
# last_used is written at most this often per token: it says whether a token is still in use,
# and a write per request would cost SQLite more than it tells.
_TOUCH_EVERY: Final = 60.0


class UserError(ValueError):
    """A change to the users that cannot be made; the message says why."""


class CredentialKind(StrEnum):
    SESSION = "session"  # from signing in, for the admin UI; expires
    API = "api"  # for a script; made on the command line, expires when told to


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: Role
    sites: tuple[str, ...]  # names; empty for an admin, who sees every site
    created: float
    disabled: bool
    last_login: float | None


@dataclass(frozen=True)
class Issued:
    """A new token, to be shown once, and when it stops working (None: never)."""

    token: str
    expires: float | None


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    token: str
    expires: float


def normal_name(name: str) -> str:
    return name.strip().lower()


def _new_token() -> str:
    return USER_PREFIX + secrets.token_urlsafe(32)


class UserStore:
    def __init__(self, engine: Engine, passwords: Passwords | None = None) -> None:
        self.engine = engine
        self.passwords = passwords or Passwords()

    # --- the users ---------------------------------------------------------------------------

    def check(self, name: str, role: Role, site_names: Sequence[str]) -> None:
        """``UserError`` unless a user ``name`` of ``role`` in ``site_names`` can be added (so
        that the command line says so before it asks for a password)."""
        name = normal_name(name)
        if not USER_NAME.match(name):
            raise UserError(
                f"{name!r} is not a user name: use 1-64 lowercase letters, digits, dots, "
                "dashes, underscores, @ or +, starting with a letter or digit"
            )
        if role is Role.ADMIN and site_names:
            raise UserError("an admin sees every site: give no --site")
        if role is not Role.ADMIN and not site_names:
            raise UserError(f"a {role} sees only the sites they belong to: give --site")
        with self.engine.connect() as conn:
            _site_ids(conn, site_names)
            if conn.execute(select(_users.c.id).where(_users.c.name == name)).first():
                raise UserError(f"a user named {name!r} exists already")

    def add(self, name: str, password: str, role: Role, site_names: Sequence[str]) -> UserInfo:
        """A new user of ``role``, belonging to ``site_names`` (none for an admin, at least
        one for anybody else); ``UserError`` says what is wrong."""
        self.check(name, role, site_names)
        name = normal_name(name)
        weak = problem(password)
        if weak is not None:
            raise UserError(weak)
        hashed = self.passwords.hash(password)
        now = time.time()
        try:
            with self.engine.begin() as conn:
                site_ids = _site_ids(conn, site_names)
                user_id = conn.execute(
                    insert(_users)
                    .values(
                        name=name,
                        password_hash=hashed,
                        role=role.value,
                        created=now,
                        disabled=False,
                        last_login=None,
                    )
                    .returning(_users.c.id)
                ).scalar_one()
                if site_ids:
                    conn.execute(
                        insert(_user_sites),
                        [{"user_id": user_id, "site_id": s} for s in sorted(set(site_ids))],
                    )
        except IntegrityError:
            raise UserError(f"a user named {name!r} exists already") from None
        return UserInfo(user_id, name, role, tuple(sorted(set(site_names))), now, False, None)

    def users(self) -> list[UserInfo]:
        with self.engine.connect() as conn:
            memberships: dict[int, list[str]] = {}
            for user_id, site in conn.execute(
                select(_user_sites.c.user_id, _sites.c.name)
                .join(_sites, _sites.c.id == _user_sites.c.site_id)
                .order_by(_sites.c.name)
            ):
                memberships.setdefault(user_id, []).append(site)
            rows = conn.execute(select(_users).order_by(_users.c.name)).all()
        return [
            UserInfo(
                row.id,
                row.name,
                Role(row.role),
                tuple(memberships.get(row.id, ())),
                row.created,
                bool(row.disabled),
                row.last_login,
            )
            for row in rows
        ]

    def disable(self, name: str) -> None:
        """Disable a user and end every session and token of theirs."""
        with self.engine.begin() as conn:
            user_id = conn.execute(
                update(_users)
                .where(_users.c.name == normal_name(name))
                .values(disabled=True)
                .returning(_users.c.id)
            ).scalar()
            if user_id is None:
                raise UserError(f"there is no user named {normal_name(name)!r}")
            conn.execute(delete(_credentials).where(_credentials.c.user_id == user_id))

    # --- tokens ------------------------------------------------------------------------------

    def issue(
        self,
        name: str,
        kind: CredentialKind,
        label: str,
        lifetime: float | None,
        now: float | None = None,
    ) -> Issued:
        """A new token for user ``name``, valid for ``lifetime`` seconds (None: until revoked)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(
                select(_users.c.id, _users.c.disabled).where(_users.c.name == normal_name(name))
            ).first()
            if row is None:
                raise UserError(f"there is no user named {normal_name(name)!r}")
            if row.disabled:
                raise UserError(f"{normal_name(name)!r} is disabled")
            return _issue(conn, row.id, kind, label, now, lifetime)

    def sign_in(
        self, name: str, password: str, lifetime: float, now: float | None = None
    ) -> SignedIn | None:
        """A session for ``name`` if ``password`` is theirs and they are not disabled."""
        now = time.time() if now is None else now
        name = normal_name(name)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_users.c.id, _users.c.password_hash, _users.c.disabled).where(
                    _users.c.name == name
                )
            ).first()
        if row is None:
            self.passwords.waste(password)
            return None
        if not self.passwords.matches(row.password_hash, password) or row.disabled:
            return None
        with self.engine.begin() as conn:
            changes: dict[str, object] = {"last_login": now}
            if self.passwords.needs_rehash(row.password_hash):
                changes["password_hash"] = self.passwords.hash(password)
            conn.execute(update(_users).where(_users.c.id == row.id).values(**changes))
            # The user's old sessions go as they sign in again: the table stays small.
            conn.execute(
                delete(_credentials).where(
                    _credentials.c.user_id == row.id, _credentials.c.expires <= now
                )
            )
            issued = _issue(conn, row.id, CredentialKind.SESSION, "", now, lifetime)
            principal = _principal(conn, row.id)
        assert isinstance(principal, Principal) and issued.expires is not None
        return SignedIn(principal, issued.token, issued.expires)

    def principal(self, token: str, now: float | None = None) -> Principal | str:
        """Who ``token`` belongs to, or why it does not let anybody in."""
        now = time.time() if now is None else now
        hashed = token_hash(token)
        c = _credentials.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.user_id, c.expires, c.last_used).where(c.token_hash == hashed)
            ).first()
            if row is None:
                return "the token is not known: it was revoked, or never issued"
            if row.expires is not None and row.expires <= now:
                return "the token has expired: sign in again"
            found = _principal(conn, row.user_id)
        if isinstance(found, Principal) and (
            row.last_used is None or now - row.last_used >= _TOUCH_EVERY
        ):
            with self.engine.begin() as conn:
                conn.execute(
                    update(_credentials).where(c.token_hash == hashed).values(last_used=now)
                )
        return found

    def sign_out(self, token: str) -> bool:
        """Revoke ``token`` (a session, or an API token); whether it existed."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(_credentials)
                .where(_credentials.c.token_hash == token_hash(token))
                .returning(_credentials.c.user_id)
            ).all()
        return bool(gone)


def _site_ids(conn: Connection, names: Sequence[str]) -> list[int]:
    if not names:
        return []
    found = dict(
        conn.execute(select(_sites.c.name, _sites.c.id).where(_sites.c.name.in_(names))).all()
    )
    missing = sorted(set(names) - set(found))
    if missing:
        raise UserError(f"no site named {', '.join(missing)}: see 'schoolgate-collector site list'")
    return [found[n] for n in names]


def _issue(
    conn: Connection,
    user_id: int,
    kind: CredentialKind,
    label: str,
    now: float,
    lifetime: float | None,
) -> Issued:
    token = _new_token()
    expires = now + lifetime if lifetime is not None else None
    conn.execute(
        insert(_credentials).values(
            token_hash=token_hash(token),
            user_id=user_id,
            kind=kind.value,
            label=label[:MAX_LABEL],
            created=now,
            expires=expires,
            last_used=None,
        )
    )
    return Issued(token, expires)


def _principal(conn: Connection, user_id: int) -> Principal | str:
    row = conn.execute(
        select(_users.c.name, _users.c.role, _users.c.disabled).where(_users.c.id == user_id)
    ).first()
    if row is None or row.disabled:
        return "the account is disabled"
    try:
        role = Role(row.role)
    except ValueError:
        return f"the account's role {row.role!r} is unknown to this collector"
    if role is Role.ADMIN:
        return Principal(user_id, row.name, role, None)
    sites = conn.execute(select(_user_sites.c.site_id).where(_user_sites.c.user_id == user_id))
    return Principal(user_id, row.name, role, frozenset(sites.scalars()))
