"""The policy page: what each group of a school gets in each category, the exceptions in force,
the agent's latest ``policy test``, and every change with who made it, when and why.

Without a school chosen it lists the schools with the change in force for each and how its
last policy test went, since the matrix belongs to one school. The matrix comes from
``policy_matrix``: the central documents as the agent will read them, or, for a school whose
policy is not managed centrally, what its agent reported in its latest test.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schoolgate.server.auth import Permission
from schoolgate.server.params import Params
from schoolgate.server.policy_matrix import Matrix, changes, school_matrix, test_rows
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._i18n import Translator

ACTION_CLASSES: Final = {
    "allow": "allow",
    "block": "block",
    "alert": "alert",
    "block+alert": "block-alert",
}


def matrix_rows(ctx: WebContext, t: Translator, matrix: Matrix) -> list[dict[str, Any]]:
    """The matrix as table rows: a category each, with its tier and a cell per group."""
    rows = []
    for category, tier in matrix.categories:
        cells = []
        for group in matrix.groups:
            cell = matrix.cell(category, group.name)
            cells.append(
                {
                    "action": cell.action if cell else "",
                    "css": ACTION_CLASSES.get(cell.action, "") if cell else "",
                    "during": list(cell.during) if cell else [],
                }
            )
        rows.append(
            {"id": category, "tier": tier, "name": ctx.category_name(t, category), "cells": cells}
        )
    return rows


class PolicyPage:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def show(self, request: Request) -> Response:
        ctx = self.ctx
        principal = await ctx.web.require(request, Permission.STATS)
        t = ctx.render.translator(request)
        params = Params(request, ("site",), t.zone)
        site = params.text("site", 64)
        scope = await ctx.scope(principal, site)
        if not site and len(scope.ids) == 1:
            site = scope.names[scope.ids[0]]
        health = await ctx.run(ctx.agents.health, scope.ids)
        context: dict[str, Any] = {
            "site": site,
            "sites": await ctx.site_names(principal),
            "action_classes": ACTION_CLASSES,
        }
        if not site:
            district, revisions = await ctx.run(ctx.policies.in_force)
            schools = []
            for site_id in scope.ids:
                own = revisions.get(site_id)
                found = health.get(site_id)
                schools.append(
                    {
                        "name": scope.names[site_id],
                        "revision": own,
                        "central": own is not None or district is not None,
                        "tested": found.tested if found else None,
                        "summary": found.test_summary if found else None,
                    }
                )
            context.update({"district": district, "schools": schools})
            return ctx.render.page(request, "policy.html", context, principal=principal)
        site_id = scope.ids[0]
        found = health.get(site_id)
        matrix = await ctx.run(school_matrix, ctx.policies, site_id, found, t.language)
        context.update(
            {
                "matrix": matrix,
                "rows": matrix_rows(ctx, t, matrix) if matrix else [],
                "exceptions": await ctx.run(ctx.policies.live_exceptions, site_id),
                "changes": await ctx.run(changes, ctx.policies, site_id),
                "tested": found.tested if found else None,
                "summary": found.test_summary if found else None,
                "findings": test_rows(
                    found.policy_test if found else None, ("mismatch", "override")
                ),
            }
        )
        return ctx.render.page(request, "policy.html", context, principal=principal)


def routes(ctx: WebContext) -> list[Route]:
    return [Route("/policy", PolicyPage(ctx).show, methods=["GET"])]
