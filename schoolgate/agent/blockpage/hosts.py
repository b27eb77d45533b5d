"""Names that arrive from the network: the Host header and the form's name field.

Both are hostile until shown otherwise (a pupil can ask for ``<script>.example``). Only a text
that is a plain DNS name comes out, in the policy's normalized form; everything else is None,
and the raw value is never shown or logged.
"""

from __future__ import annotations

import re
from typing import Final

from schoolgate.agent.filter.names import InvalidName, normalize

# Longest legitimate Host: a 253-character name, a trailing dot and ":65535".
_MAX_HOST: Final = 260
_NAME: Final = r"[A-Za-z0-9._-]+"
_HOST: Final = re.compile(rf"({_NAME})(?::[0-9]{{1,5}})?")
_TEXT: Final = re.compile(_NAME)


def name_from_host(host: str | None) -> str | None:
    """'Blocked.Example:8080' -> 'blocked.example'; None for anything that is not a name.

    IP literals are not names: a browser sent to the page's address by hand has nothing blocked
    to ask about.
    """
    if host is None or len(host) > _MAX_HOST:
        return None
    m = _HOST.fullmatch(host)
    if m is None:
        return None
    return name_from_text(m.group(1))


def name_from_text(text: str) -> str | None:
    """A name as the form sends it back; None unless it is a plain DNS name."""
    if len(text) > _MAX_HOST or not _TEXT.fullmatch(text):
        return None
    try:
        return normalize(text)
    except InvalidName:
        return None
