"""The central policy: documents and their history, exceptions, and unblock requests.

``PolicyStore`` keeps, in the collector's database:

- every revision of the district's base policy and of each school's own (``policy_revisions``,
  append-only: the newest is in force, the rest say who changed what, when and why);
- exceptions granted centrally (``central_exceptions``), time-limited, revocable;
- the unblock requests agents send up, and the decision on each (``unblock_requests``).

``for_agent`` makes what ``GET /api/v1/policy`` answers a site's agent: the effective policy
(the district's with the school's on top), the live exceptions, and an ETag over both.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Engine, Table, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.policy.exceptions import MAX_DURATION, normalize_device
from schoolgate.server.db.engine import is_postgresql
from schoolgate.server.db.schema import (
    CentralException,
    PolicyRevision,
    Site,
    UnblockRequest,
)
from schoolgate.server.policy_documents import (
    Document,
    PolicyDocumentError,
    check_policy,
    merge,
    read_document,
)
from schoolgate.server.repository import SiteRef

_revisions = cast(Table, PolicyRevision.__table__)
_exceptions = cast(Table, CentralException.__table__)
_requests = cast(Table, UnblockRequest.__table__)
_sites = cast(Table, Site.__table__)

MAX_REASON: Final = 2_000
MAX_REQUESTS_PER_CALL: Final = 1_000
_GROUP_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class PolicyError(ValueError):
    """A change that cannot be made; the message says why (shown to the person making it)."""


@dataclass(frozen=True)
class Revision:
    id: int
    site_id: int | None
    text: str
    created: float
    author: str
    reason: str


@dataclass(frozen=True)
class EffectivePolicy:
    sections: Document
    district_revision: int | None
    site_revision: int | None


@dataclass(frozen=True)
class GrantedException:
    id: str
    site_id: int
    name: str
    group: str
    action: str
    created: float
    expires: float
    reason: str
    author: str
    request_id: str | None
    device: str = ""  # "" for the whole group

    def for_agent(self) -> dict[str, Any]:
        # The agent's exception format (schoolgate.agent.policy.exceptions.PolicyException).
        return {
            "id": self.id,
            "name": self.name,
            "group": self.group,
            "device": self.device,
            "action": self.action,
            "expires": self.expires,
            "reason": self.reason,
            "created": self.created,
            "by": self.author,
        }


@dataclass(frozen=True)
class RequestDecision:
    request_id: str
    status: str
    exception: GrantedException | None


def _check_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise PolicyError("a reason is needed: the record says why each change was made")
    if len(reason) > MAX_REASON:
        raise PolicyError(f"the reason is over {MAX_REASON:,} characters")
    return reason


def _check_group(group: str) -> str:
    if not 0 < len(group) <= 63 or not set(group) <= _GROUP_CHARS:
        raise PolicyError(f"group {group!r}: letters, digits, '-' and '_', at most 63")
    return group


def _requesting_device(mac: str, client_ip: str, request_id: str) -> str:
    """The device a request came from as an exception names it: its MAC address when the
    agent reported a sound one, else its IP address."""
    for candidate in (mac, client_ip):
        try:
            device = normalize_device(candidate)
        except ValueError:
            continue
        if device:
            return device
    raise PolicyError(f"request {request_id} does not say which device sent it")


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if is_postgresql(engine) else sqlite.insert

    def site_named(self, name: str) -> SiteRef | None:
        query = select(_sites.c.id, _sites.c.name).where(_sites.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else SiteRef(row.id, row.name)

    # --- documents --------------------------------------------------------------------------

    def current(self, site_id: int | None) -> Revision | None:
        """The revision in force for a school (``site_id``) or the district (None)."""
        found = self.history(site_id, limit=1)
        return found[0] if found else None

    def history(self, site_id: int | None, limit: int = 50) -> list[Revision]:
        """Revisions, newest first."""
        scope = (
            _revisions.c.site_id.is_(None) if site_id is None else (_revisions.c.site_id == site_id)
        )
        query = select(_revisions).where(scope).order_by(_revisions.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [Revision(**row._mapping) for row in conn.execute(query)]

    def in_force(self) -> tuple[Revision | None, dict[int, Revision]]:
        """The district's revision in force and each school's."""
        newest = select(func.max(_revisions.c.id)).group_by(_revisions.c.site_id).scalar_subquery()
        query = select(_revisions).where(_revisions.c.id.in_(newest))
        with self.engine.connect() as conn:
            found = [Revision(**row._mapping) for row in conn.execute(query)]
        district = next((rev for rev in found if rev.site_id is None), None)
        return district, {rev.site_id: rev for rev in found if rev.site_id is not None}

    def save(self, site: SiteRef | None, text: str, author: str, reason: str) -> Revision:
        """Check and store a new revision of the district's document (``site`` None) or a
        school's. A district document is checked with every school's on top, so a change
        that would break one school is refused, naming it."""
        reason = _check_reason(reason)
        shown = "the district policy" if site is None else f"the policy of {site.name}"
        try:
            doc = read_document(text, shown)
            district, schools = self.in_force()
            if site is None:
                check_policy(doc, shown, text, doc)
                names = self._site_names()
                for site_id, rev in schools.items():
                    school = read_document(rev.text, f"the policy of {names.get(site_id)}")
                    check_policy(
                        merge(doc, school),
                        f"{shown} with the policy of {names.get(site_id, site_id)} on top",
                    )
            else:
                base = read_document(district.text, "the district policy") if district else {}
                check_policy(merge(base, doc), shown, text, doc)
        except PolicyDocumentError as exc:
            raise PolicyError(str(exc)) from None
        now = time.time()
        with self.engine.begin() as conn:
            rev_id = conn.execute(
                _revisions.insert()
                .values(
                    site_id=None if site is None else site.id,
                    text=text,
                    created=now,
                    author=author,
                    reason=reason,
                )
                .returning(_revisions.c.id)
            ).scalar_one()
        return Revision(rev_id, None if site is None else site.id, text, now, author, reason)

    def _site_names(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return {row.id: row.name for row in conn.execute(select(_sites.c.id, _sites.c.name))}

    def effective(self, site_id: int) -> EffectivePolicy:
        """The district's document with the school's on top."""
        district, school = self.current(None), self.current(site_id)
        base = read_document(district.text, "the district policy") if district else {}
        own = read_document(school.text, "the school's policy") if school else {}
        return EffectivePolicy(
            merge(base, own),
            district.id if district else None,
            school.id if school else None,
        )

    # --- exceptions -------------------------------------------------------------------------

    def grant(
        self,
        site: SiteRef,
        name: str,
        group: str,
        action: str,
        seconds: int,
        reason: str,
        author: str,
        request_id: str | None = None,
        device: str = "",
    ) -> GrantedException:
        """An exception for one group of one school, or one ``device`` of the group (its MAC
        or IP address), ending after ``seconds``."""
        try:
            name = normalize(name)
        except InvalidName as exc:
            raise PolicyError(f"{name!r} is not a domain name: {exc}") from None
        try:
            device = normalize_device(device)
        except ValueError as exc:
            raise PolicyError(f"device: {exc}") from None
        if action not in ("allow", "block"):
            raise PolicyError(f"action {action!r}: allow or block")
        if not 0 < seconds <= MAX_DURATION:
            raise PolicyError("an exception lasts between one second and a year")
        granted = GrantedException(
            id=secrets.token_hex(8),
            site_id=site.id,
            name=name,
            group=_check_group(group),
            action=action,
            created=time.time(),
            expires=time.time() + seconds,
            reason=_check_reason(reason),
            author=author,
            request_id=request_id,
            device=device,
        )
        with self.engine.begin() as conn:
            row = asdict(granted)
            row["grp"] = row.pop("group")
            conn.execute(_exceptions.insert().values(**row))
        return granted

    def revoke(self, site: SiteRef, exception_id: str, by: str) -> bool:
        now = time.time()
        with self.engine.begin() as conn:
            went = conn.execute(
                update(_exceptions)
                .where(
                    _exceptions.c.id == exception_id,
                    _exceptions.c.site_id == site.id,
                    _exceptions.c.revoked.is_(None),
                    _exceptions.c.expires > now,
                )
                .values(revoked=now, revoked_by=by)
            )
        return went.rowcount > 0

    def live_exceptions(self, site_id: int, now: float | None = None) -> list[GrantedException]:
        now = time.time() if now is None else now
        e = _exceptions.c
        return self._exceptions(e.site_id == site_id, e.revoked.is_(None), e.expires > now)

    def granted_between(self, site_id: int, since: float, until: float) -> list[GrantedException]:
        """The exceptions granted for a site from ``since`` to before ``until``, revoked or
        expired since or not (the annual review's record of them)."""
        e = _exceptions.c
        return self._exceptions(e.site_id == site_id, e.created >= since, e.created < until)

    def _exceptions(self, *conditions: ColumnElement[bool]) -> list[GrantedException]:
        e = _exceptions.c
        query = (
            select(
                e.id,
                e.site_id,
                e.name,
                e.grp.label("group"),
                e.action,
                e.created,
                e.expires,
                e.reason,
                e.author,
                e.request_id,
                e.device,
            )
            .where(*conditions)
            .order_by(e.created, e.id)
        )
        with self.engine.connect() as conn:
            return [GrantedException(**row) for row in conn.execute(query).mappings()]

    def decided_counts(self, site_id: int, since: float, until: float) -> dict[str, int]:
        """A site's unblock requests decided from ``since`` to before ``until``, by status."""
        q = _requests.c
        query = (
            select(q.status, func.count())
            .where(q.site_id == site_id, q.decided >= since, q.decided < until)
            .group_by(q.status)
        )
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    # --- what an agent is sent --------------------------------------------------------------

    def for_agent(self, site: SiteRef, now: float | None = None) -> tuple[bytes, str]:
        """The body of ``GET /api/v1/policy`` for ``site``, and its ETag."""
        policy = self.effective(site.id)
        body = json.dumps(
            {
                "site": site.name,
                "district_revision": policy.district_revision,
                "site_revision": policy.site_revision,
                "policy": policy.sections,
                "exceptions": [x.for_agent() for x in self.live_exceptions(site.id, now)],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    # --- unblock requests -------------------------------------------------------------------

    def receive_requests(self, site: SiteRef, requests: list[dict[str, Any]]) -> int:
        """Keep the requests an agent sent, each once by its id; how many were new."""
        if not requests:
            return 0
        now = time.time()
        rows = [
            {
                **{k: r[k] for k in ("id", "created", "client_ip", "mac", "hostname", "name")},
                "site_id": site.id,
                "grp": r["group"],
                "category": r["category"],
                "reason": r["reason"],
                "language": r["language"],
                "received": now,
                "status": "pending",
            }
            for r in requests
        ]
        with self.engine.begin() as conn:
            went = conn.execute(
                self._insert(_requests)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(_requests.c.id)
            ).all()
        return len(went)

    def decide(
        self,
        site: SiteRef,
        request_id: str,
        approve: bool,
        by: str,
        note: str,
        seconds: int = 0,
        group: str | None = None,
        for_device: bool = False,
    ) -> RequestDecision:
        """Approve a pending request (an exception for its group, or ``group``, for
        ``seconds``; with ``for_device``, for the requesting device alone) or refuse it; the
        note is the reason kept with the decision.

        The device is named by its MAC address when the agent knew it, since a laptop's IP
        address changes with its DHCP lease; by its IP address otherwise."""
        r = _requests.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_requests).where(r.site_id == site.id, r.id == request_id)
            ).first()
        if row is None:
            raise PolicyError(f"no unblock request {request_id} at {site.name}")
        if row.status != "pending":
            raise PolicyError(f"request {request_id} was {row.status} already by {row.decided_by}")
        note = _check_reason(note)
        granted = None
        if approve:
            device = _requesting_device(row.mac, row.client_ip, request_id) if for_device else ""
            granted = self.grant(
                site, row.name, group or row.grp, "allow", seconds, note, by, request_id, device
            )
        status = "approved" if approve else "refused"
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(_requests)
                .where(and_(r.site_id == site.id, r.id == request_id, r.status == "pending"))
                .values(
                    status=status,
                    decided=time.time(),
                    decided_by=by,
                    note=note,
                    exception_id=granted.id if granted else None,
                )
            ).rowcount
        if not changed:
            # Decided by someone else at the same moment: theirs stands, ours is withdrawn.
            if granted is not None:
                self.revoke(site, granted.id, by)
            raise PolicyError(f"request {request_id} was decided by someone else just now")
        return RequestDecision(request_id, status, granted)
