"""Who may do what at the collector: roles, their permissions, and the signed-in principal.

| permission | what it allows | admin | safeguarding-lead | technician | viewer |
|---|---|:-:|:-:|:-:|:-:|
| ``stats`` | the sites list, daily counts, top blocked names | yes | yes | yes | yes |
| ``events`` | searching events (without alerts unless ``alerts`` too) | yes | yes | yes | |
| ``devices`` | the devices list | yes | yes | yes | |
| ``requests`` | the unblock requests list | yes | yes | yes | |
| ``alerts`` | safeguarding alerts, in their list and in event searches | yes | yes | | |
| ``export`` | CSV export of events | yes | yes | | |
| ``decide-requests`` | approving or refusing unblock requests | yes | yes | | |
| ``acknowledge-alerts`` | recording what was done about an alert | yes | yes | | |
| ``approve-devices`` | approving a device, or marking it known | yes | | yes | |
| ``site-policy`` | editing a site's policy | yes | | yes | |
| ``district-policy`` | editing the district's policy | yes | | | |
| ``users`` | managing users | yes | | | |
| ``sites`` | managing sites | yes | | | |

An admin sees every site; everybody else sees the sites they belong to (``user_sites``) and
nothing of the others. A technician troubleshoots ("why is this blocked for that laptop?")
and so searches events, but safeguarding alerts are for the safeguarding lead: an event
search by somebody without ``alerts`` leaves alert events out.

Route modules call ``require(request, permission)`` first thing; it answers 401 for a request
without a valid user token and 403 for a principal without the permission (an ``ApiError``,
which the app turns into the JSON answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

import anyio
from starlette.requests import Request

from schoolgate.server.errors import ApiError, in_thread

if TYPE_CHECKING:
    from schoolgate.server.users import UserStore

USER_PREFIX: Final = "sgu_"  # a site's token starts sgs_: the two never stand in


class Role(StrEnum):
    ADMIN = "admin"
    SAFEGUARDING_LEAD = "safeguarding-lead"
    TECHNICIAN = "technician"
    VIEWER = "viewer"


class Permission(StrEnum):
    STATS = "stats"
    EVENTS = "events"
    DEVICES = "devices"
    REQUESTS = "requests"
    ALERTS = "alerts"
    EXPORT = "export"
    DECIDE_REQUESTS = "decide-requests"
    ACKNOWLEDGE_ALERTS = "acknowledge-alerts"
    APPROVE_DEVICES = "approve-devices"
    SITE_POLICY = "site-policy"
    DISTRICT_POLICY = "district-policy"
    USERS = "users"
    SITES = "sites"


_P = Permission
PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.ADMIN: frozenset(Permission),
    Role.SAFEGUARDING_LEAD: frozenset(
        {
            _P.STATS,
            _P.EVENTS,
            _P.DEVICES,
            _P.REQUESTS,
            _P.ALERTS,
            _P.EXPORT,
            _P.DECIDE_REQUESTS,
            _P.ACKNOWLEDGE_ALERTS,
        }
    ),
    Role.TECHNICIAN: frozenset(
        {_P.STATS, _P.EVENTS, _P.DEVICES, _P.REQUESTS, _P.SITE_POLICY, _P.APPROVE_DEVICES}
    ),
    Role.VIEWER: frozenset({_P.STATS}),
}


@dataclass(frozen=True)
class Principal:
    """A signed-in user: their role and the sites they see (None: every site)."""

    user_id: int
    name: str
    role: Role
    sites: frozenset[int] | None

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def sees(self, site_id: int) -> bool:
        return self.sites is None or site_id in self.sites


def bearer_token(request: Request) -> str:
    """The token of an ``Authorization: Bearer`` header, or "" without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": 'Bearer realm="schoolgate"'})


class Authenticator:
    """Turns a request's bearer token into a ``Principal``, checked anew on every request: a
    disabled user or a revoked token stops working at once, whichever process changed it."""

    def __init__(self, users: UserStore, limiter: anyio.CapacityLimiter) -> None:
        self.users = users
        self.limiter = limiter

    async def principal(self, request: Request) -> Principal:
        known = getattr(request.state, "principal", None)
        if isinstance(known, Principal):
            return known
        token = bearer_token(request)
        if not token:
            raise _unauthorized("sign in: a user's bearer token is needed")
        if not token.startswith(USER_PREFIX):
            # Also a site's token: it sends events and nothing else.
            raise _unauthorized("not a user's token")
        found = await in_thread(self.limiter, self.users.principal, token)
        if not isinstance(found, Principal):
            raise _unauthorized(found)
        request.state.principal = found
        return found


async def require(request: Request, permission: Permission) -> Principal:
    """The request's principal if it has ``permission``; ``ApiError`` 401 or 403 otherwise."""
    auth: Authenticator = request.app.state.auth
    principal = await auth.principal(request)
    if not principal.can(permission):
        raise ApiError(403, f"the {principal.role} role does not allow this ({permission})")
    return principal
