"""The policy a district's collector sends: kept on disk, laid over the local configuration.

With ``[collector] policy = true`` (the default when a collector is configured) the agent asks
the collector for its site's policy every ``policy_interval`` seconds (``policy_sync``). What
comes back is the district's base policy with the school's own on top, as configuration
sections, plus the exceptions granted centrally:

- ``STATE_DIR/policy/central.json`` holds the sections and the revisions they came from
  (``central.etag`` beside it, the collector's ETag for what was received). Each section it
  holds (``[site]``, ``[policy]``, ``[[schedules]]``, ``[[groups]]``) replaces the
  configuration file's own when the configuration is loaded; the sections it does not hold
  stay as the file writes them. The agent runs on this copy while the collector is
  unreachable, and after a restart.
- ``STATE_DIR/policy/central-exceptions.json`` holds the central exceptions, in the format of
  the local ``exceptions.json``; the agent applies both within a second, as it does for
  exceptions granted on its own command line.

A policy is written here only after it has been checked together with the local configuration,
so the file on disk is always one the agent can start with.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from schoolgate.agent.files import write_atomic
from schoolgate.agent.policy.exceptions import ExceptionStore, PolicyException, parse_entry

# The configuration sections the collector may set, and nothing else: where the agent listens,
# its upstreams and its lists stay the school's own.
SECTIONS: Final = ("site", "policy", "schedules", "groups")
POLICY_FILE: Final = "central.json"
ETAG_FILE: Final = "central.etag"
EXCEPTIONS_FILE: Final = "central-exceptions.json"
_MAX_EXCEPTIONS: Final = 10_000


class CentralPolicyError(Exception):
    """A policy from the collector, or its copy on disk, that cannot be used."""


@dataclass(frozen=True)
class CentralPolicy:
    """The collector's policy for this site: configuration sections and where they came from."""

    sections: Mapping[str, Any]
    district_revision: int | None
    site_revision: int | None
    received: float

    def same_as(self, other: CentralPolicy | None) -> bool:
        """The same policy (when it was received aside)."""
        return other is not None and (
            dict(self.sections),
            self.district_revision,
            self.site_revision,
        ) == (dict(other.sections), other.district_revision, other.site_revision)

    def apply(self, raw: dict[str, Any]) -> None:
        """Lay the sections over a parsed configuration file (before it is checked)."""
        for key in SECTIONS:
            if key in self.sections:
                raw[key] = copy.deepcopy(self.sections[key])

    def describe(self) -> str:
        parts = [
            f"{scope} revision {number}"
            for scope, number in (
                ("district", self.district_revision),
                ("school", self.site_revision),
            )
            if number is not None
        ]
        return "the collector's policy (" + (", ".join(parts) or "empty") + ")"

    def to_json(self) -> dict[str, Any]:
        return {
            "sections": dict(self.sections),
            "district_revision": self.district_revision,
            "site_revision": self.site_revision,
            "received": self.received,
        }


def _revision(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CentralPolicyError(f"{what}: expected a revision number, got {value!r}")
    return value


def policy_from_json(doc: object, received: float) -> CentralPolicy:
    """The policy part of the collector's answer (or of the copy on disk), checked for shape.

    Whether the sections make a sound configuration is for the configuration loader to say;
    this only makes sure they are the sections the collector may set.
    """
    if not isinstance(doc, dict):
        raise CentralPolicyError("expected a JSON object")
    sections = doc.get("sections", doc.get("policy"))
    if not isinstance(sections, dict):
        raise CentralPolicyError("'policy': expected an object of configuration sections")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise CentralPolicyError(
            f"'policy' sets {', '.join(unknown)}: "
            f"only {', '.join(SECTIONS)} come from the collector"
        )
    if not math.isfinite(received):
        raise CentralPolicyError(f"'received': {received!r} is not a time")
    return CentralPolicy(
        sections=sections,
        district_revision=_revision(doc.get("district_revision"), "'district_revision'"),
        site_revision=_revision(doc.get("site_revision"), "'site_revision'"),
        received=received,
    )


def exceptions_from_json(items: object) -> list[PolicyException]:
    """The exceptions of the collector's answer; an entry that is not a sound one is skipped,
    as in the local file, so one bad entry cannot hold up the rest."""
    if not isinstance(items, list):
        raise CentralPolicyError("'exceptions': expected a list")
    if len(items) > _MAX_EXCEPTIONS:
        raise CentralPolicyError(f"'exceptions': more than {_MAX_EXCEPTIONS:,}")
    found = [parse_entry(item) for item in items]
    return [entry for entry in found if entry is not None]


class CentralFiles:
    """The collector's policy and exceptions as this agent last received them."""

    def __init__(self, state_dir: Path) -> None:
        self.policy_path = state_dir / "policy" / POLICY_FILE
        self.etag_path = state_dir / "policy" / ETAG_FILE
        self.exceptions = ExceptionStore(state_dir, EXCEPTIONS_FILE)

    def read_policy(self) -> CentralPolicy | None:
        """The policy on disk, None when none was received yet."""
        try:
            doc = json.loads(self.policy_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CentralPolicyError(f"{self.policy_path}: cannot read: {exc}") from None
        if not isinstance(doc, dict):
            raise CentralPolicyError(f"{self.policy_path}: expected a JSON object")
        received = doc.get("received")
        if not isinstance(received, int | float) or isinstance(received, bool):
            raise CentralPolicyError(f"{self.policy_path}: no 'received' time")
        try:
            return policy_from_json(doc, float(received))
        except CentralPolicyError as exc:
            raise CentralPolicyError(f"{self.policy_path}: {exc}") from None

    def write_policy(self, policy: CentralPolicy) -> None:
        body = json.dumps(policy.to_json(), indent=1, sort_keys=True)
        write_atomic(self.policy_path, body.encode("utf-8"))

    def write_exceptions(self, entries: list[PolicyException]) -> None:
        self.exceptions.replace(entries)

    def read_etag(self) -> str | None:
        """The collector's tag for what was last received and kept; None to ask for all."""
        try:
            tag = self.etag_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return tag if tag and tag.isprintable() and self.policy_path.exists() else None

    def write_etag(self, etag: str) -> None:
        write_atomic(self.etag_path, etag.encode("ascii", "replace"))
