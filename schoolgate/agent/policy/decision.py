"""What the policy decided for one question, and why."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class Decision:
    """A decision with its reasons: the category, the list entry that matched and its lists."""

    __slots__ = ("action", "blocked", "category", "entry", "lists", "rule")

    def __init__(
        self,
        action: Action,
        rule: str,
        category: str | None = None,
        entry: str | None = None,
        lists: tuple[str, ...] = (),
    ) -> None:
        self.action = action
        self.blocked = action is Action.BLOCK
        self.rule = rule
        self.category = category
        self.entry = entry
        self.lists = lists

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
