"""What the policy decided for one question, and why."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What the policy does with a category: the four actions a school can choose."""

    ALLOW = "allow"
    BLOCK = "block"
    ALERT = "alert"  # let through, and raise an alert
    BLOCK_ALERT = "block+alert"

    @property
    def blocks(self) -> bool:
        return self in (Action.BLOCK, Action.BLOCK_ALERT)

    @property
    def alerts(self) -> bool:
        return self in (Action.ALERT, Action.BLOCK_ALERT)

    @staticmethod
    def combine(blocks: bool, alerts: bool) -> Action:
        if blocks:
            return Action.BLOCK_ALERT if alerts else Action.BLOCK
        return Action.ALERT if alerts else Action.ALLOW


class Decision:
    """A decision with its reasons: the category, the list entry that matched and its lists.

    ``categories`` is every category the name is listed in, the deciding one first; ``bypass``
    is true when one of them is of the bypass tier (encrypted DNS, VPNs and proxies).
    ``rewrite`` is the wire name of a safe-mode host the answer must lead to (SafeSearch), for a
    name that is let through. ``special`` is true when the query needs more than the plain
    path: it is blocked, rewritten, raises an alert or is a bypass attempt. The query path
    tests that one flag and nothing else in the common case.
    """

    __slots__ = (
        "action",
        "alert",
        "blocked",
        "bypass",
        "categories",
        "category",
        "entry",
        "lists",
        "rewrite",
        "rule",
        "special",
    )

    def __init__(
        self,
        action: Action,
        rule: str,
        category: str | None = None,
        entry: str | None = None,
        lists: tuple[str, ...] = (),
        rewrite: bytes | None = None,
        categories: tuple[str, ...] = (),
        bypass: bool = False,
    ) -> None:
        self.action = action
        self.blocked = action.blocks
        self.alert = action.alerts
        self.rule = rule
        self.category = category
        if category is not None and category not in categories:
            categories = (category, *categories)
        self.categories = categories
        self.entry = entry
        self.lists = lists
        self.rewrite = None if self.blocked else rewrite
        self.bypass = bypass
        self.special = self.blocked or self.alert or bypass or self.rewrite is not None

    def explain(self) -> str:
        if self.action is Action.ALLOW and self.category is None:
            return f"allow ({self.rule})"
        parts = [self.action.value, f"rule={self.rule}"]
        if self.category:
            parts.append(f"category={self.category}")
        if self.entry:
            parts.append(f"entry={self.entry}")
        if self.lists:
            parts.append("lists=" + ",".join(self.lists))
        return " ".join(parts)


ALLOWED = Decision(Action.ALLOW, "no list matched")
