"""Policy documents: the district's base policy, a school's own on top, and the check that the
two make a configuration every agent can run.

A document is TOML in the agent's own configuration syntax (docs/configuration.md), holding
only the sections the collector may set: ``[site]``, ``[policy]``, ``[[schedules]]`` and
``[[groups]]``. A school's document *extends* the district's:

- ``[site]`` and the keys of ``[policy]``: the school's value wins; ``[policy] actions`` are
  merged category by category.
- ``[[schedules]]``: a school schedule with the name of a district one replaces it; others
  are added.
- ``[[groups]]``: a school group with the name of a district group extends it: its
  ``actions`` and ``schedules`` are merged category by category, its ``addresses``, ``macs``,
  ``hostnames``, ``allow`` and ``deny`` are added to the district's, and its other keys win.
  Groups with new names are added.

What no document can do, the agent's checks refuse as they would in a file: a locked
category (illegal content) allowed, two default groups, an unknown category or key.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from schoolgate.agent.config import AgentConfig, ConfigError, parse
from schoolgate.agent.policy.central import SECTIONS

MAX_DOCUMENT_BYTES: Final = 256 * 1024
_ADDED: Final = ("addresses", "macs", "hostnames", "allow", "deny")
_MERGED: Final = ("actions",)
Document = dict[str, Any]


class PolicyDocumentError(ValueError):
    """A document that cannot be used; the message names the line or key and says why."""


def read_document(text: str, shown: str) -> Document:
    """Parse a document and check its shape (not yet whether it makes a sound policy)."""
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise PolicyDocumentError(f"{shown}: over {MAX_DOCUMENT_BYTES // 1024} KiB")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyDocumentError(f"{shown}: not valid TOML: {exc}") from None
    for key, value in doc.items():
        if key not in SECTIONS:
            raise PolicyDocumentError(
                f"{shown}: [{key}] cannot come from the collector: a policy document holds "
                f"only {', '.join(SECTIONS)} (the rest stays in each agent's own file)"
            )
        if key in ("site", "policy") and not isinstance(value, dict):
            raise PolicyDocumentError(f"{shown}: {key} must be a table ([{key}])")
        if key in ("schedules", "groups"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise PolicyDocumentError(f"{shown}: {key} must be tables ([[{key}]])")
            for i, entry in enumerate(value):
                if not isinstance(entry.get("name"), str):
                    raise PolicyDocumentError(f"{shown}: {key}[{i}].name: a name is needed")
    return doc


def _merge_tables(base: Any, school: Any) -> Any:
    if isinstance(base, dict) and isinstance(school, dict):
        return {**base, **school}
    return school


def _merge_group(base: Mapping[str, Any], school: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in school.items():
        if key in _MERGED:
            out[key] = _merge_tables(out.get(key), value)
        elif key == "schedules" and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            for name, actions in value.items():
                merged[name] = _merge_tables(merged.get(name), actions)
            out[key] = merged
        elif key in _ADDED and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


def _by_name(
    base: list[dict[str, Any]], school: list[dict[str, Any]], merge: Any
) -> list[dict[str, Any]]:
    out = [dict(entry) for entry in base]
    index = {entry["name"]: i for i, entry in enumerate(out)}
    for entry in school:
        at = index.get(entry["name"])
        if at is None:
            index[entry["name"]] = len(out)
            out.append(dict(entry))
        else:
            out[at] = merge(out[at], entry)
    return out


def merge(base: Document, school: Document) -> Document:
    """The school's document laid over the district's, as the module docstring says."""
    out = copy.deepcopy(base)
    school = copy.deepcopy(school)
    if "site" in school:
        out["site"] = {**out.get("site", {}), **school["site"]}
    if "policy" in school:
        policy = dict(out.get("policy", {}))
        for key, value in school["policy"].items():
            policy[key] = _merge_tables(policy.get(key), value) if key in _MERGED else value
        out["policy"] = policy
    if "schedules" in school:
        out["schedules"] = _by_name(
            out.get("schedules", []), school["schedules"], lambda _old, new: new
        )
    if "groups" in school:
        out["groups"] = _by_name(out.get("groups", []), school["groups"], _merge_group)
    return out


def agent_config(policy: Document, shown: str) -> AgentConfig:
    """The configuration an agent makes of ``policy`` on its defaults for everything else;
    ``ConfigError`` when the agent would refuse it."""

    def use(raw: dict[str, Any]) -> None:
        raw.update(copy.deepcopy(policy))

    return parse("", shown, Path("/"), overrides=use)


def check_policy(
    policy: Document, shown: str, text: str = "", written: Document | None = None
) -> None:
    """``PolicyDocumentError`` unless ``policy`` makes a configuration the agent accepts.

    The agent's own checks are used, on its defaults for everything else. When ``text`` and
    the document ``written`` in it are given, an error names the line of ``text`` that writes
    the key, if the key has the same value there.
    """

    try:
        agent_config(policy, shown)
    except ConfigError as exc:
        if text and written is not None:
            exc = exc.at_line(text, written, policy)
        raise PolicyDocumentError(str(exc)) from None
