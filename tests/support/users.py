"""Users for the collector's tests: argon2's cheapest parameters, so that making a user takes
microseconds rather than most of a second. Hashes keep their parameters, so the collector
checks these quickly too (and replaces them with its own at the first sign-in)."""

from __future__ import annotations

from argon2 import PasswordHasher, profiles
from sqlalchemy import Engine

from schoolgate.server.passwords import Passwords
from schoolgate.server.users import UserStore

PASSWORD = "correct horse battery staple"


def cheap_passwords() -> Passwords:
    return Passwords(PasswordHasher.from_parameters(profiles.CHEAPEST))


def user_store(engine: Engine) -> UserStore:
    return UserStore(engine, cheap_passwords())
