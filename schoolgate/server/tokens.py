"""Site tokens: 256 random bits, shown once, kept as their SHA-256.

A token is as strong as a key, so a slow password hash would add nothing but a delay to every
batch; its SHA-256 is enough to make a copy of the database useless for sending as a site.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

PREFIX: Final = "sgs_"  # recognisable in a config file or a leak scanner


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
