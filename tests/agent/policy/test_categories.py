"""The category taxonomy: the bundled file, per-tier actions, locked categories, site ones."""

from __future__ import annotations

import pytest

from schoolgate.agent.policy.categories import (
    LANGUAGES,
    AgeTier,
    Taxonomy,
    TaxonomyError,
    Tier,
    bundled,
    make_category,
    parse_taxonomy,
)
from schoolgate.agent.policy.decision import Action

REQUIRED = {
    "child-abuse",
    "terrorism",
    "adult",
    "gambling",
    "drugs",
    "hate",
    "extremism",
    "violence",
    "weapons",
    "self-harm",
    "malware",
    "phishing",
    "piracy",
    "proxy-vpn",
    "encrypted-dns",
    "dating",
    "social",
    "chat",
    "games",
    "streaming",
    "genai",
    "shopping",
}


def test_the_bundled_taxonomy_has_every_required_category() -> None:
    assert set(bundled().categories) >= REQUIRED


def test_every_category_is_complete() -> None:
    for category in bundled():
        for language in LANGUAGES:
            assert category.name(language), (category.id, language)
        assert category.description
        assert category.uksic, category.id
        assert set(category.defaults) == set(AgeTier)


def test_tiers_and_age_tiers_have_names_in_every_language() -> None:
    t = bundled()
    for tier in Tier:
        assert all(t.tier_names[tier][lang] for lang in LANGUAGES)
    for age in AgeTier:
        assert all(t.age_names[age][lang] for lang in LANGUAGES)


def test_locked_categories_are_blocked_whatever_the_overrides() -> None:
    t = bundled()
    locked = {c.id for c in t if c.locked}
    assert locked == {"child-abuse", "terrorism"}
    for age in AgeTier:
        actions = t.actions(age, {"child-abuse": Action.ALLOW, "terrorism": Action.ALERT})
        assert actions["child-abuse"] is Action.BLOCK
        assert actions["terrorism"] is Action.BLOCK


def test_locked_categories_keep_an_alert_when_asked() -> None:
    actions = bundled().actions(AgeTier.STAFF, {"child-abuse": Action.BLOCK_ALERT})
    assert actions["child-abuse"] is Action.BLOCK_ALERT


def test_overrides_change_only_what_they_name() -> None:
    t = bundled()
    plain = t.actions(AgeTier.SECONDARY)
    changed = t.actions(AgeTier.SECONDARY, {"games": Action.ALLOW, "nonsense": Action.BLOCK})
    assert changed["games"] is Action.ALLOW
    assert {k: v for k, v in changed.items() if k != "games"} == {
        k: v for k, v in plain.items() if k != "games"
    }
    assert "nonsense" not in changed


def test_defaults_follow_the_age_tiers() -> None:
    t = bundled()
    assert t.actions(AgeTier.FOUNDATION)["social"] is Action.BLOCK
    assert t.actions(AgeTier.STAFF)["social"] is Action.ALLOW
    assert t.actions(AgeTier.SECONDARY)["self-harm"] is Action.BLOCK_ALERT
    assert t.actions(AgeTier.STAFF)["self-harm"] is Action.ALERT


def test_check_override_explains_a_refusal() -> None:
    t = bundled()
    assert t.check_override("games", Action.ALLOW) is None
    assert t.check_override("child-abuse", Action.BLOCK_ALERT) is None
    reason = t.check_override("child-abuse", Action.ALLOW)
    assert reason is not None and "locked" in reason
    unknown = t.check_override("gamez", Action.BLOCK)
    assert unknown is not None and "no such category" in unknown and "games" in unknown


def test_site_categories_extend_and_cannot_redefine() -> None:
    everyone = dict.fromkeys(AgeTier, Action.BLOCK)
    site = make_category("local", Tier.PRODUCTIVITY, {"en": "Local"}, "", everyone, site=True)
    extended = bundled().extended([site])
    assert extended["local"].site and "local" in extended
    clash = make_category("games", Tier.PRODUCTIVITY, {"en": "Mine"}, "", everyone)
    with pytest.raises(TaxonomyError, match="already defined"):
        bundled().extended([clash])


@pytest.mark.parametrize(
    ("category_id", "tier", "defaults", "fault"),
    [
        ("Bad Id", Tier.SECURITY, dict.fromkeys(AgeTier, Action.BLOCK), "lowercase"),
        ("x", Tier.SECURITY, {AgeTier.STAFF: Action.BLOCK}, "no default action"),
        (
            "x",
            Tier.LOCKED,
            {**dict.fromkeys(AgeTier, Action.BLOCK), AgeTier.STAFF: Action.ALERT},
            "locked",
        ),
    ],
)
def test_make_category_refuses_what_cannot_work(
    category_id: str, tier: Tier, defaults: dict[AgeTier, Action], fault: str
) -> None:
    with pytest.raises(TaxonomyError, match=fault):
        make_category(category_id, tier, {"en": "X"}, "", defaults)


_HEAD = (
    "\n".join(f'[tiers.{t.value}]\nname = {{ en = "T" }}' for t in Tier)
    + "\n"
    + "\n".join(f'[age_tiers.{a.value}]\nname = {{ en = "A" }}' for a in AgeTier)
)
_DEFAULTS = ", ".join(f'{a.value} = "block"' for a in AgeTier)


def _category(cid: str, extra: str = "") -> str:
    return (
        f'\n[[category]]\nid = "{cid}"\ntier = "security"\ndescription = "d"\n'
        f'name = {{ en = "E", vi = "V", zh = "Z" }}\ndefault = {{ {_DEFAULTS} }}\n{extra}'
    )


def test_parse_taxonomy_names_faults() -> None:
    ok = parse_taxonomy(_HEAD + _category("a"), "t.toml")
    assert isinstance(ok, Taxonomy) and ok["a"].tier is Tier.SECURITY
    with pytest.raises(TaxonomyError, match="defined twice"):
        parse_taxonomy(_HEAD + _category("a") + _category("a"), "t.toml")
    with pytest.raises(TaxonomyError, match=r"t\.toml"):
        parse_taxonomy(_HEAD + _category("a", 'colour = "red"\n'), "t.toml")
    with pytest.raises(TaxonomyError, match="no vi name"):
        parse_taxonomy(_HEAD + _category("a").replace('vi = "V", ', ""), "t.toml")
    with pytest.raises(TaxonomyError, match="not described"):
        parse_taxonomy(
            _HEAD.replace('[tiers.bypass]\nname = { en = "T" }', "") + _category("a"), "t.toml"
        )


def test_a_probe_is_carried_and_checked() -> None:
    probed = parse_taxonomy(_HEAD + _category("a", 'probe = "games.example"\n'), "t.toml")
    assert probed["a"].probe == "games.example"
    assert parse_taxonomy(_HEAD + _category("a"), "t.toml")["a"].probe == ""
    with pytest.raises(TaxonomyError, match=r"probe 'bad\.\.example'"):
        parse_taxonomy(_HEAD + _category("a", 'probe = "bad..example"\n'), "t.toml")
    with pytest.raises(TaxonomyError, match=r"write the probe as 'games\.example'"):
        parse_taxonomy(_HEAD + _category("a", 'probe = "Games.Example."\n'), "t.toml")


def test_a_locked_category_has_no_probe_of_its_own() -> None:
    locked = _category("a", 'probe = "x.example"\n').replace('tier = "security"', 'tier = "locked"')
    with pytest.raises(TaxonomyError, match="locked: it cannot have a probe"):
        parse_taxonomy(_HEAD + locked, "t.toml")
    assert not any(c.probe for c in bundled() if c.locked)
