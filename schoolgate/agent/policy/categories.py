"""The category taxonomy: what each category is, its tier, and its default action per age tier.

The bundled taxonomy (``filter_lists/categories.toml``) defines every category once; a site may
add its own in its configuration. The locked tier (illegal content) is blocked for everyone:
its defaults must all be ``block`` and nothing a site configures can change that.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Final

import msgspec

from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.policy.decision import Action

BUNDLED_TAXONOMY: Final = "categories.toml"
LANGUAGES: Final = ("en", "vi", "zh")
CATEGORY_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Tier(StrEnum):
    """What kind of harm a category covers, from most to least serious."""

    LOCKED = "locked"
    SAFEGUARDING = "safeguarding"
    SECURITY = "security"
    BYPASS = "bypass"
    AGE_APPROPRIATE = "age-appropriate"
    PRODUCTIVITY = "productivity"


class AgeTier(StrEnum):
    """The audiences a category's default actions are written for."""

    FOUNDATION = "foundation"  # Foundation stage and Key Stage 1
    KS2 = "ks2"
    SECONDARY = "secondary"
    STAFF = "staff"
    GUEST = "guest"


TIER_ORDER: Final = {tier: rank for rank, tier in enumerate(Tier)}


class TaxonomyError(Exception):
    """A taxonomy entry that cannot be used; the message names the category and the fault."""


@dataclass(frozen=True)
class Category:
    id: str
    tier: Tier
    names: Mapping[str, str]
    description: str
    defaults: Mapping[AgeTier, Action]
    uksic: str = ""
    site: bool = False  # defined by the site's configuration rather than the bundled taxonomy
    # A name certainly in the category's lists, for ``policy test``; empty where no name is
    # both sure to stay listed and fit to print in a report (never for the locked tier).
    probe: str = ""

    @property
    def locked(self) -> bool:
        return self.tier is Tier.LOCKED

    def name(self, language: str = "en") -> str:
        """The category's name in ``language``, falling back to English."""
        return self.names.get(language) or self.names["en"]


@dataclass(frozen=True)
class Taxonomy:
    categories: Mapping[str, Category]
    tier_names: Mapping[Tier, Mapping[str, str]] = field(default_factory=dict)
    age_names: Mapping[AgeTier, Mapping[str, str]] = field(default_factory=dict)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self.categories

    def __getitem__(self, category_id: str) -> Category:
        return self.categories[category_id]

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories.values())

    def extended(self, site: Iterable[Category]) -> Taxonomy:
        """This taxonomy with a site's own categories added."""
        merged = dict(self.categories)
        for category in site:
            if category.id in merged:
                raise TaxonomyError(f"category {category.id!r} is already defined")
            merged[category.id] = category
        return Taxonomy(merged, self.tier_names, self.age_names)

    def actions(
        self, age_tier: AgeTier, overrides: Mapping[str, Action] | None = None
    ) -> dict[str, Action]:
        """The action for every category for an audience, with a site's overrides applied.

        Locked categories are blocked whatever the overrides say; ``check_overrides`` is what
        refuses such a configuration with a message, this is the last line of defence.
        """
        actions = {c.id: c.defaults[age_tier] for c in self.categories.values()}
        for category_id, action in (overrides or {}).items():
            if category_id in actions:
                actions[category_id] = action
        for category in self.categories.values():
            if category.locked and not actions[category.id].blocks:
                actions[category.id] = Action.BLOCK
        return actions

    def check_override(self, category_id: str, action: Action) -> str | None:
        """Why an override is refused, or None when it is acceptable."""
        category = self.categories.get(category_id)
        if category is None:
            return f"no such category; known: {', '.join(sorted(self.categories))}"
        if category.locked and not action.blocks:
            return (
                f"{category_id} is a locked category (illegal content): it is blocked for"
                " everyone and no configuration can allow it"
            )
        return None


class _Names(msgspec.Struct, forbid_unknown_fields=True):
    en: str
    vi: str = ""
    zh: str = ""


class _Described(msgspec.Struct, forbid_unknown_fields=True):
    name: _Names
    description: str = ""


class _Category(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    tier: Tier
    name: _Names
    description: str
    default: dict[AgeTier, Action]
    uksic: str = ""
    probe: str = ""


class _File(msgspec.Struct, forbid_unknown_fields=True):
    tiers: dict[Tier, _Described]
    age_tiers: dict[AgeTier, _Described]
    category: list[_Category]


def parse_taxonomy(text: str, where: str) -> Taxonomy:
    """Parse and check a taxonomy file; raises ``TaxonomyError`` naming what is wrong."""
    try:
        raw = msgspec.convert(tomllib.loads(text), _File, strict=True)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise TaxonomyError(f"{where}: {exc}") from None
    for tier in Tier:
        if tier not in raw.tiers:
            raise TaxonomyError(f"{where}: tier {tier.value!r} is not described")
    for age in AgeTier:
        if age not in raw.age_tiers:
            raise TaxonomyError(f"{where}: age tier {age.value!r} is not described")
    categories: dict[str, Category] = {}
    for entry in raw.category:
        category = make_category(
            entry.id,
            entry.tier,
            msgspec.structs.asdict(entry.name),
            entry.description,
            entry.default,
            uksic=entry.uksic,
            probe=entry.probe,
        )
        if category.id in categories:
            raise TaxonomyError(f"{where}: category {category.id!r} is defined twice")
        for language in LANGUAGES:
            if not category.names.get(language):
                raise TaxonomyError(f"{where}: category {category.id!r} has no {language} name")
        categories[category.id] = category
    return Taxonomy(
        categories,
        {t: msgspec.structs.asdict(d.name) for t, d in raw.tiers.items()},
        {a: msgspec.structs.asdict(d.name) for a, d in raw.age_tiers.items()},
    )


def make_category(
    category_id: str,
    tier: Tier,
    names: Mapping[str, str],
    description: str,
    defaults: Mapping[AgeTier, Action],
    *,
    uksic: str = "",
    site: bool = False,
    probe: str = "",
) -> Category:
    """A checked category: a usable id, an English name, an action for every age tier, and a
    probe, if any, that is a name in its canonical form."""
    if not CATEGORY_ID.fullmatch(category_id):
        raise TaxonomyError(
            f"category id {category_id!r}: use lowercase ASCII letters, digits, '-' and '_'"
        )
    if not names.get("en"):
        raise TaxonomyError(f"category {category_id!r} has no English name")
    missing = [a.value for a in AgeTier if a not in defaults]
    if missing:
        raise TaxonomyError(f"category {category_id!r} has no default action for {missing}")
    if tier is Tier.LOCKED and not all(a.blocks for a in defaults.values()):
        raise TaxonomyError(f"category {category_id!r} is locked: every default must block")
    if probe and tier is Tier.LOCKED:
        # The names in these lists are confidential; a site supplies its own probe.
        raise TaxonomyError(f"category {category_id!r} is locked: it cannot have a probe")
    if probe:
        try:
            canonical = normalize(probe)
        except InvalidName as exc:
            raise TaxonomyError(f"category {category_id!r}: probe {probe!r}: {exc}") from None
        if canonical != probe:
            raise TaxonomyError(f"category {category_id!r}: write the probe as {canonical!r}")
    return Category(
        id=category_id,
        tier=tier,
        names={k: v for k, v in names.items() if v},
        description=description,
        defaults=dict(defaults),
        uksic=uksic,
        site=site,
        probe=probe,
    )


@cache
def bundled() -> Taxonomy:
    """The taxonomy that ships with schoolgate."""
    ref = resources.files("schoolgate.filter_lists").joinpath(BUNDLED_TAXONOMY)
    return parse_taxonomy(ref.read_text(encoding="utf-8"), f"(bundled {BUNDLED_TAXONOMY})")
