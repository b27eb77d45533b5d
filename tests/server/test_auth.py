"""Roles and their permissions, and what a principal sees."""

from __future__ import annotations

import pytest

from schoolgate.server.auth import PERMISSIONS, Permission, Principal, Role

P = Permission
# The table of docs/collector.md, written out again: a change to either must be deliberate.
EXPECTED = {
    Role.ADMIN: set(Permission),
    Role.SAFEGUARDING_LEAD: {
        P.STATS,
        P.EVENTS,
        P.DEVICES,
        P.REQUESTS,
        P.ALERTS,
        P.EXPORT,
        P.DECIDE_REQUESTS,
        P.ACKNOWLEDGE_ALERTS,
    },
    Role.TECHNICIAN: {P.STATS, P.EVENTS, P.DEVICES, P.REQUESTS, P.SITE_POLICY, P.APPROVE_DEVICES},
    Role.VIEWER: {P.STATS},
}


def test_role_names_are_those_of_the_docs() -> None:
    assert [r.value for r in Role] == ["admin", "safeguarding-lead", "technician", "viewer"]


@pytest.mark.parametrize("role", list(Role))
def test_each_role_has_the_documented_permissions(role: Role) -> None:
    principal = Principal(1, "someone", role, None if role is Role.ADMIN else frozenset({1}))
    assert {p for p in Permission if principal.can(p)} == EXPECTED[role]
    assert PERMISSIONS[role] == EXPECTED[role]


def test_a_principal_sees_its_sites_only() -> None:
    lead = Principal(2, "lead", Role.SAFEGUARDING_LEAD, frozenset({1, 4}))
    assert [s for s in range(1, 6) if lead.sees(s)] == [1, 4]
    nobody = Principal(3, "new", Role.VIEWER, frozenset())
    assert not any(nobody.sees(s) for s in range(1, 6))
    admin = Principal(1, "head", Role.ADMIN, None)
    assert all(admin.sees(s) for s in range(1, 6))
