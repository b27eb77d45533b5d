"""Users' passwords, hashed with argon2id.

A check takes a large fraction of a second of one core by design, so callers run it in a
worker thread. A name nobody has is checked against a dummy hash all the same, so the time of
an answer does not tell which names exist. A hash made with older parameters is replaced at
the next successful sign-in (``needs_rehash``).
"""

from __future__ import annotations

import secrets
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH: Final = 12
MAX_LENGTH: Final = 1_024  # a longer one only makes the hash slower to check


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        # argon2-cffi's defaults are RFC 9106's low-memory profile of argon2id.
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def matches(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def waste(self, password: str) -> None:
        """As long as a check that fails, for a name nobody has."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self.matches(self._dummy, password)


def problem(password: str) -> str | None:
    """Why ``password`` will not do, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    return None
