"""Users, their sites and their tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, text

from schoolgate.server.auth import USER_PREFIX, Principal, Role
from schoolgate.server.repository import SqlRepository
from schoolgate.server.users import CredentialKind, UserError, UserStore
from tests.support.users import PASSWORD, user_store

NOW = time.time()


@pytest.fixture
def users(repo: SqlRepository) -> UserStore:
    repo.add_site("north-primary")
    repo.add_site("south-academy")
    return user_store(repo.engine)


def _hash(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT password_hash FROM users WHERE name = :n"), {"n": name}
        ).scalar_one()
    return str(found)


def test_a_user_is_added_with_a_role_and_sites(users: UserStore) -> None:
    added = users.add("J.Smith@North.example", PASSWORD, Role.TECHNICIAN, ["north-primary"])
    assert (added.name, added.role, added.sites) == (
        "j.smith@north.example",
        Role.TECHNICIAN,
        ("north-primary",),
    )
    users.add("head", PASSWORD, Role.ADMIN, [])
    listed = {u.name: u for u in users.users()}
    assert listed["j.smith@north.example"].sites == ("north-primary",)
    assert listed["head"].sites == () and listed["head"].role is Role.ADMIN
    stored = _hash(users.engine, "head")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


@pytest.mark.parametrize(
    ("name", "password", "role", "sites", "message"),
    [
        ("x", "short", Role.VIEWER, ["north-primary"], "at least 12 characters"),
        ("x", PASSWORD, Role.ADMIN, ["north-primary"], "admin sees every site"),
        ("x", PASSWORD, Role.VIEWER, [], "give --site"),
        ("x", PASSWORD, Role.VIEWER, ["nowhere"], "no site named nowhere"),
        ("../etc", PASSWORD, Role.VIEWER, ["north-primary"], "is not a user name"),
        ("a" * 65, PASSWORD, Role.VIEWER, ["north-primary"], "is not a user name"),
    ],
)
def test_a_bad_user_is_refused(
    users: UserStore, name: str, password: str, role: Role, sites: list[str], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        users.add(name, password, role, sites)
    assert users.users() == []


def test_names_are_unique(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.SAFEGUARDING_LEAD, ["north-primary"])
    with pytest.raises(UserError, match="exists already"):
        users.add("LEAD", PASSWORD, Role.VIEWER, ["north-primary"])


def test_sign_in_gives_a_session_of_the_users_sites(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.SAFEGUARDING_LEAD, ["north-primary", "south-academy"])
    signed = users.sign_in(" Lead ", PASSWORD, lifetime=3600, now=NOW)
    assert signed is not None
    assert signed.token.startswith(USER_PREFIX) and signed.expires == NOW + 3600
    principal = users.principal(signed.token, now=NOW + 10)
    assert isinstance(principal, Principal)
    assert principal.role is Role.SAFEGUARDING_LEAD and principal.sites is not None
    assert len(principal.sites) == 2
    assert principal == signed.principal
    with users.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash, kind FROM credentials").one()
    assert signed.token not in stored[0] and stored[1] == "session"
    (listed,) = users.users()
    assert listed.last_login == NOW


def test_an_admin_sees_every_site(users: UserStore) -> None:
    users.add("head", PASSWORD, Role.ADMIN, [])
    signed = users.sign_in("head", PASSWORD, lifetime=3600)
    assert signed is not None and signed.principal.sites is None


@pytest.mark.parametrize(("name", "password"), [("lead", "wrong password!"), ("nobody", PASSWORD)])
def test_a_wrong_password_or_name_gives_nothing(users: UserStore, name: str, password: str) -> None:
    users.add("lead", PASSWORD, Role.VIEWER, ["north-primary"])
    assert users.sign_in(name, password, lifetime=3600) is None


def test_a_disabled_user_cannot_sign_in_and_loses_every_token(users: UserStore) -> None:
    users.add("tech", PASSWORD, Role.TECHNICIAN, ["north-primary"])
    session = users.sign_in("tech", PASSWORD, lifetime=3600)
    api = users.issue("tech", CredentialKind.API, "nightly export", lifetime=None)
    assert session is not None and api.expires is None
    assert isinstance(users.principal(api.token), Principal)
    users.disable("tech")
    assert users.sign_in("tech", PASSWORD, lifetime=3600) is None
    assert users.principal(session.token) == (
        "the token is not known: it was revoked, or never issued"
    )
    assert users.principal(api.token) == "the token is not known: it was revoked, or never issued"
    with pytest.raises(UserError, match="is disabled"):
        users.issue("tech", CredentialKind.API, "", lifetime=None)
    with pytest.raises(UserError, match="no user named 'ghost'"):
        users.disable("ghost")
    assert users.users()[0].disabled


def test_a_disabled_users_token_fails_even_if_it_was_left_behind(users: UserStore) -> None:
    # Another process disabling the user between the two reads of a request, say: the flag
    # is checked on its own, not only through the credentials deleted with it.
    users.add("tech", PASSWORD, Role.TECHNICIAN, ["north-primary"])
    token = users.issue("tech", CredentialKind.API, "", lifetime=None).token
    with users.engine.begin() as conn:
        conn.execute(text("UPDATE users SET disabled = :d"), {"d": True})
    assert users.principal(token) == "the account is disabled"


def test_a_session_expires(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.VIEWER, ["north-primary"])
    signed = users.sign_in("lead", PASSWORD, lifetime=60, now=NOW)
    assert signed is not None
    assert isinstance(users.principal(signed.token, now=NOW + 59), Principal)
    assert users.principal(signed.token, now=NOW + 60) == "the token has expired: sign in again"
    # Expired sessions are cleared away when the user signs in again.
    assert users.sign_in("lead", PASSWORD, lifetime=60, now=NOW + 120) is not None
    with users.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM credentials").scalar_one() == 1


def test_sign_out_revokes_the_token(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.VIEWER, ["north-primary"])
    signed = users.sign_in("lead", PASSWORD, lifetime=3600)
    assert signed is not None
    assert users.sign_out(signed.token) is True
    assert not isinstance(users.principal(signed.token), Principal)
    assert users.sign_out(signed.token) is False


def test_last_used_is_written_at_most_once_a_minute(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.VIEWER, ["north-primary"])
    token = users.issue("lead", CredentialKind.API, "script", lifetime=None, now=NOW).token

    def last_used() -> float:
        with users.engine.connect() as conn:
            return float(conn.exec_driver_sql("SELECT last_used FROM credentials").scalar_one())

    users.principal(token, now=NOW)
    users.principal(token, now=NOW + 30)
    assert last_used() == NOW
    users.principal(token, now=NOW + 61)
    assert last_used() == NOW + 61


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(users: UserStore) -> None:
    users.add("lead", PASSWORD, Role.VIEWER, ["north-primary"])
    cheap = _hash(users.engine, "lead")
    stronger = UserStore(users.engine)  # the collector's own parameters
    assert stronger.sign_in("lead", PASSWORD, lifetime=3600) is not None
    rehashed = _hash(users.engine, "lead")
    assert rehashed != cheap
    assert not stronger.passwords.needs_rehash(rehashed)
    expected = PasswordHasher()
    assert f"m={expected.memory_cost},t={expected.time_cost}" in rehashed
    assert stronger.sign_in("lead", PASSWORD, lifetime=3600) is not None
