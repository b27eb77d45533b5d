"""The interface's messages: found in the templates and page modules, and kept in step with
the catalogues.

    python -m schoolgate.server.web._messages

adds each new message to ``locales/vi.po`` and ``locales/zh.po`` (untranslated, for a
translator to fill in) and marks those no longer used as obsolete. The test suite fails while
any message is untranslated or a translation's ``%(name)s`` placeholders differ from the
English ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from schoolgate.server.web._i18n import DEFAULT, LANGUAGES

HERE: Final = Path(__file__).parent
LOCALES: Final = HERE / "locales"
KEYWORDS: Final = {"_": None, "gettext": None, "N_": None}
_METHODS: Final = [
    ("**.py", "python"),
    ("templates/**.html", "jinja2.ext:babel_extract"),
]
PLACEHOLDER: Final = re.compile(r"%\((\w+)\)s")


def extract() -> dict[str, list[str]]:
    """Every message id in the pages, with where it is used."""
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        HERE,
        method_map=_METHODS,
        keywords=KEYWORDS,
        options_map={"templates/**.html": {"trimmed": "false"}},
    ):
        for text in message if isinstance(message, tuple) else (message,):
            if text:
                found.setdefault(text, []).append(f"{filename}:{lineno}")
    return found


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def update() -> None:
    messages = extract()
    for language in LANGUAGES:
        if language == DEFAULT:
            continue
        path = LOCALES / f"{language}.po"
        with path.open("rb") as f:
            old = read_po(f, locale=language)
        # The header's dates and addresses stay as they are: no churn on every run.
        template = Catalog(locale=language, creation_date=old.creation_date)
        for text, where in sorted(messages.items()):
            places = [(w.rsplit(":", 1)[0], int(w.rsplit(":", 1)[1])) for w in where]
            template.add(text, locations=places)
        old.update(template, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, old, width=100, omit_header=False, sort_output=True, ignore_obsolete=True)
        untranslated = sum(1 for m in old if m.id and not m.string)
        print(f"{path.name}: {len(messages)} messages, {untranslated} to translate")


if __name__ == "__main__":
    update()
