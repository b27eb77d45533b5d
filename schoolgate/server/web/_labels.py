"""The words the pages show for the collector's fixed values: roles, actions, event kinds,
severities and alert outcomes.

The values themselves (``block+alert``, ``safeguarding-lead``) are data, stable in the
database, the API and exports; people read these labels instead, translated like every other
message. ``N_`` marks a message for the catalogues without translating it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


def N_(message: str) -> str:
    return message


TABLES: Final[Mapping[str, Mapping[str, str]]] = {
    "roles": {
        "admin": N_("District admin"),
        "safeguarding-lead": N_("Safeguarding lead"),
        "technician": N_("Technician"),
        "viewer": N_("Viewer"),
    },
    "actions": {
        "allow": N_("Allowed"),
        "block": N_("Blocked"),
        "alert": N_("Allowed, alert raised"),
        "block+alert": N_("Blocked, alert raised"),
    },
    "tiers": {
        "locked": N_("Illegal content (always blocked)"),
        "safeguarding": N_("Safeguarding"),
        "security": N_("Security"),
        "bypass": N_("Filter bypass"),
        "age-appropriate": N_("Age-appropriate"),
        "productivity": N_("Productivity"),
    },
    "test-results": {
        "ok": N_("As configured"),
        "mismatch": N_("Not as configured"),
        "override": N_("Decided by the school's own list or an exception"),
        "no probe": N_("No test name for this category"),
    },
    "kinds": {
        "dns": N_("DNS lookup"),
        "alert": N_("Alert"),
        "device": N_("Device seen"),
        "bypass": N_("Bypass attempt"),
        "bandwidth": N_("Bandwidth"),
        "status": N_("Agent status"),
    },
    "severities": {
        "critical": N_("Critical"),
        "high": N_("High"),
        "medium": N_("Medium"),
        "low": N_("Low"),
        "info": N_("Information"),
    },
    "outcomes": {
        "no-concern": N_("Looked into: no concern"),
        "spoke-to-user": N_("Spoke to the pupil or member of staff"),
        "logged-safeguarding": N_("Recorded as a safeguarding concern"),
        "parents-contacted": N_("Parents or carers contacted"),
        "referred-externally": N_("Referred to an outside agency"),
        "wrong-category": N_("Site wrongly categorised"),
        "other": N_("Other (see the note)"),
    },
    "request-statuses": {
        "pending": N_("Waiting"),
        "approved": N_("Approved"),
        "refused": N_("Refused"),
    },
}
