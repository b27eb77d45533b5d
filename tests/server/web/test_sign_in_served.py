"""Signing in to the admin pages over real HTTP: the cookie, the guards on the forms, the
limits on failures, and where a page sends somebody who is not signed in."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.server.test_admin_api_served import World
from tests.support.browser import Browser, hidden_fields
from tests.support.users import PASSWORD

PAGES = ("/", "/activity", "/alerts", "/devices")


def test_a_page_sends_somebody_not_signed_in_to_sign_in_and_back(
    browser: Callable[..., Browser],
) -> None:
    visitor = browser()
    for path in PAGES:
        answer = visitor.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/sign-in")
    asked = visitor.get("/alerts", state="open")
    assert asked.headers["location"] == "/sign-in?next=/alerts%3Fstate%3Dopen"
    form = visitor.get(asked.headers["location"])
    fields = hidden_fields(form.text)
    assert fields["next"] == "/alerts?state=open"
    signed = visitor.post(
        "/sign-in",
        {"nonce": fields["nonce"], "next": fields["next"], "name": "head", "password": PASSWORD},
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/alerts?state=open"
    assert visitor.follow(signed).status_code == 200


def test_the_session_cookie_is_guarded(browser: Callable[..., Browser]) -> None:
    visitor = browser()
    fields = hidden_fields(visitor.get("/sign-in").text)
    signed = visitor.post(
        "/sign-in", {"nonce": fields["nonce"], "next": "/", "name": "head", "password": PASSWORD}
    )
    cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("__Host-schoolgate=")
    )
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower() and "domain" not in attributes
    assert visitor.cookies["__Host-schoolgate"].startswith("sgu_")


def test_every_page_goes_out_with_guarding_headers(browser: Callable[..., Browser]) -> None:
    head, visitor = browser("head"), browser()
    for path in (*PAGES, "/sign-in"):
        answer = (visitor if path == "/sign-in" else head).get(path)
        assert answer.status_code == 200, (path, answer.text)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"


def test_a_wrong_password_shows_the_form_again_without_it(
    browser: Callable[..., Browser],
) -> None:
    visitor = browser()
    fields = hidden_fields(visitor.get("/sign-in").text)
    answer = visitor.post(
        "/sign-in",
        {"nonce": fields["nonce"], "next": "/", "name": "head", "password": "guess-me-123"},
    )
    assert answer.status_code == 401
    assert "Wrong user name or password" in answer.text
    assert "guess-me-123" not in answer.text
    assert "__Host-schoolgate" not in visitor.cookies


def test_a_sign_in_without_the_forms_nonce_is_refused(browser: Callable[..., Browser]) -> None:
    visitor = browser()
    visitor.get("/sign-in")
    answer = visitor.post(
        "/sign-in", {"nonce": "x" * 43, "next": "/", "name": "head", "password": PASSWORD}
    )
    assert answer.status_code == 400
    assert "__Host-schoolgate" not in visitor.cookies


def test_a_form_from_another_site_changes_nothing(
    world: World, browser: Callable[..., Browser]
) -> None:
    visitor = browser()
    fields = hidden_fields(visitor.get("/sign-in").text)
    answer = visitor.post(
        "/sign-in",
        {"nonce": fields["nonce"], "next": "/", "name": "head", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403
    assert "__Host-schoolgate" not in visitor.cookies


def test_only_paths_on_this_site_are_returned_to(browser: Callable[..., Browser]) -> None:
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        visitor = browser()
        fields = hidden_fields(visitor.get("/sign-in", next=evil).text)
        signed = visitor.post(
            "/sign-in",
            {"nonce": fields["nonce"], "next": evil, "name": "head", "password": PASSWORD},
        )
        assert signed.headers["location"] == "/"


def test_signing_out_ends_the_session_everywhere(
    world: World, browser: Callable[..., Browser]
) -> None:
    head = browser("head")
    token = head.cookies["__Host-schoolgate"]
    csrf = hidden_fields(head.get("/").text)["csrf"]
    out = head.post("/sign-out", {"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/sign-in"
    assert "__Host-schoolgate" not in head.cookies
    # The old cookie, replayed, no longer opens a page, nor does the token in the API.
    stolen = Browser(world.collector.url)
    stolen.cookies["__Host-schoolgate"] = token
    try:
        assert stolen.get("/").status_code == 303
    finally:
        stolen.close()
    api = httpx.get(
        world.collector.url + "/api/v1/sites", headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 401


def test_signing_out_needs_the_forms_token(browser: Callable[..., Browser]) -> None:
    head = browser("head")
    assert head.post("/sign-out", {"csrf": "forged"}).status_code == 403
    assert head.get("/").status_code == 200


def test_failed_sign_ins_are_limited(browser: Callable[..., Browser]) -> None:
    visitor = browser()
    fields = hidden_fields(visitor.get("/sign-in").text)
    statuses = [
        visitor.post(
            "/sign-in",
            {"nonce": fields["nonce"], "next": "/", "name": "head", "password": "wrong"},
        ).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    # Even the right password waits now: the limit is checked before the password.
    right = visitor.post(
        "/sign-in", {"nonce": fields["nonce"], "next": "/", "name": "head", "password": PASSWORD}
    )
    assert right.status_code == 429
    assert "Too many failed sign-ins" in right.text and int(right.headers["retry-after"]) > 0


def test_sign_ins_and_outs_are_counted(world: World, browser: Callable[..., Browser]) -> None:
    before = world.sign_in_counts()
    head = browser("head")
    visitor = browser()
    fields = hidden_fields(visitor.get("/sign-in").text)
    form = {"nonce": fields["nonce"], "next": "/", "name": "lead-north"}
    statuses = [
        visitor.post("/sign-in", {**form, "password": "wrong"}).status_code for _ in range(10)
    ]
    assert statuses == [401] * 10
    assert visitor.post("/sign-in", {**form, "password": PASSWORD}).status_code == 429
    # A form refused before the password is looked at is not a sign-in.
    expired = visitor.post("/sign-in", {**form, "nonce": "x" * 43, "password": PASSWORD})
    assert expired.status_code == 400
    csrf = hidden_fields(head.get("/").text)["csrf"]
    assert head.post("/sign-out", {"csrf": csrf}).status_code == 303
    after = world.sign_in_counts()
    moved = {outcome: after[outcome] - before[outcome] for outcome in after}
    assert moved == {"success": 1, "rejected": 10, "throttled": 1, "sign-out": 1}


def test_plain_http_to_another_host_does_not_take_a_password(
    browser: Callable[..., Browser],
) -> None:
    visitor = browser()
    elsewhere = {"Host": "collector.school.example"}
    form = visitor.get("/sign-in", headers=elsewhere)
    assert "needs HTTPS" in form.text and 'name="password"' not in form.text
    answer = visitor.post(
        "/sign-in",
        {"nonce": "n" * 43, "next": "/", "name": "head", "password": PASSWORD},
        headers=elsewhere,
    )
    assert answer.status_code == 403
    assert not any(k.endswith("schoolgate") for k in visitor.cookies)
