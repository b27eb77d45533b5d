"""Pseudonymised client identity: the same device always gets the same stand-in, which nobody
can turn back into the device without the key.

A site that must keep less personal data sets ``activity.pseudonymise``: the address, MAC and
device name of every event are replaced, before they reach the disk, by a keyed hash
(BLAKE2b with a 32-byte key, 64 bits shown). The key lives in ``STATE_DIR/activity/
pseudonym.key``, readable only by the agent's user and made on first use. Staff who need to find
one device's activity give its address, MAC or name to ``schoolgate-agent log --client``, which
hashes it with the same key; deleting the key starts new pseudonyms that match none of the old.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

from schoolgate.agent.files import write_atomic

KEY_BYTES: Final = 32
PREFIX: Final = "p-"
_MEMO_LIMIT: Final = 65_536


class PseudonymKeyError(Exception):
    """The key cannot be read or made; the message says why."""


def key_path(state_dir: Path) -> Path:
    return state_dir / "activity" / "pseudonym.key"


def load_key(state_dir: Path, create: bool = True) -> bytes | None:
    """The site's key; made when missing if ``create``, else None when missing."""
    path = key_path(state_dir)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        key = os.urandom(KEY_BYTES)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, key)
            path.chmod(0o600)
        except OSError as exc:
            raise PseudonymKeyError(
                f"cannot make the pseudonym key {path}: {exc.strerror or exc}"
            ) from None
        return key
    except OSError as exc:
        raise PseudonymKeyError(f"cannot read the pseudonym key {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise PseudonymKeyError(
            f"the pseudonym key {path} is {len(key)} bytes, not {KEY_BYTES}: it was damaged"
            " or replaced; move it away to start new pseudonyms"
        )
    return key


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._memo: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        """The stand-in for an address, MAC or device name ('' stays '')."""
        if not value:
            return value
        found = self._memo.get(value)
        if found is None:
            # One device is the same whatever the letter case of its MAC or name.
            digest = hashlib.blake2b(value.lower().encode(), key=self._key, digest_size=8)
            found = PREFIX + digest.hexdigest()
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[value] = found
        return found
