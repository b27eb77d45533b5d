"""The audit log: who looked at pupils' activity, or decided about it, and when.

A search of events, an export, the list of alerts and a decision on an unblock request each
write one row of ``audit_log`` before the answer leaves: the user, the action, the sites the
request covered, the filters as given and how many rows went back. The write is its own
transaction, and when it fails the request fails (503): nothing is answered unaudited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, cast

import msgspec
from sqlalchemy import Engine, Table, insert

from schoolgate.server.auth import Principal
from schoolgate.server.db.schema import AuditEntry

_audit = cast(Table, AuditEntry.__table__)
_json = msgspec.json.Encoder()


class AuditAction(StrEnum):
    EVENT_SEARCH = "events.search"
    EVENT_EXPORT = "events.export"
    ALERT_LIST = "alerts.list"
    ALERT_REVIEW = "alerts.acknowledge"
    DEVICE_REVIEW = "devices.review"
    REQUEST_DECISION = "requests.decide"
    POLICY_CHANGE = "policy.change"
    EXCEPTION_GRANT = "exceptions.grant"
    EXCEPTION_REVOKE = "exceptions.revoke"


def sites_text(site_ids: Iterable[int]) -> str:
    """The sites' ids as ",1,4,", so that one is found whole with LIKE '%,4,%'."""
    ids = sorted(set(site_ids))
    return f",{','.join(map(str, ids))}," if ids else ""


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(
        self,
        principal: Principal,
        action: AuditAction,
        site_ids: Iterable[int],
        detail: Mapping[str, Any],
        now: float | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(_audit).values(
                    time=time.time() if now is None else now,
                    user_id=principal.user_id,
                    user_name=principal.name,
                    action=action.value,
                    sites=sites_text(site_ids),
                    detail=_json.encode(detail).decode(),
                )
            )
