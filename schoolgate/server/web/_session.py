"""Who is signed in to the admin pages, and proof that a form came from them.

The session is the same kind of token the JSON API takes as a bearer (``users.sign_in``),
kept in a cookie that scripts cannot read (HttpOnly), that is sent only over HTTPS (Secure,
with the ``__Host-`` prefix so no other host or path can set it), and that other sites'
links carry but their forms do not (SameSite=Lax: a link to an alert in a notification email
opens signed in).

Every form that changes something carries a CSRF token: an HMAC of the session token, so it
needs no storage and dies with the session; it is checked in constant time. The sign-in form
itself is guarded by a double-submit cookie, so another site cannot sign a browser in to an
account of its choosing. A POST the browser marks as cross-site (``Sec-Fetch-Site``) is
refused before any of that.

A browser treats ``http://localhost`` and ``127.0.0.1`` as secure, so the quick start works
without TLS. Anywhere else, plain HTTP would send the session in the clear: sign-in is refused
there, with a page saying why, unless ``admin.allow_plain_http`` says the network is closed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response

from schoolgate.agent.loopback import is_loopback
from schoolgate.server.auth import USER_PREFIX, Authenticator, Permission, Principal
from schoolgate.server.errors import ApiError, in_thread

SECURE_COOKIE: Final = "__Host-schoolgate"
PLAIN_COOKIE: Final = "schoolgate"
SIGN_IN_COOKIE: Final = "__Host-schoolgate-signin"
PLAIN_SIGN_IN_COOKIE: Final = "schoolgate-signin"
CSRF_FIELD: Final = "csrf"
MAX_FORM_BYTES: Final = 64 * 1024
MAX_FORM_FIELDS: Final = 200


class SignInNeeded(Exception):
    """The page needs a signed-in user: the answer is a redirect to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def over_https(request: Request) -> bool:
    """Whether the browser reached us in a way that keeps a Secure cookie safe."""
    return request.url.scheme == "https" or is_loopback(request.url.hostname or "")


def csrf_token(session_token: str) -> str:
    digest = hmac.new(session_token.encode(), b"schoolgate form", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def back_to(request: Request) -> str:
    """The page asked for, as a path to return to after signing in."""
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def safe_next(text: str) -> str:
    """A return path that stays on this site (``//evil.example`` and ``https:`` do not)."""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text


class WebAuth:
    """The admin pages' sessions, on top of the users store the API uses."""

    def __init__(self, auth: Authenticator, allow_plain_http: bool) -> None:
        self.auth = auth
        self.allow_plain_http = allow_plain_http

    # --- cookies ------------------------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        """Whether cookies go with Secure and the ``__Host-`` prefix."""
        return over_https(request) or not self.allow_plain_http

    def may_sign_in(self, request: Request) -> bool:
        return over_https(request) or self.allow_plain_http

    def cookie_name(self, request: Request) -> str:
        return SECURE_COOKIE if self.secure(request) else PLAIN_COOKIE

    def session_token(self, request: Request) -> str:
        token = request.cookies.get(self.cookie_name(request), "")
        return token if token.startswith(USER_PREFIX) and len(token) < 200 else ""

    def set_session(
        self, request: Request, response: Response, token: str, lifetime: float
    ) -> None:
        response.set_cookie(
            self.cookie_name(request),
            token,
            max_age=int(lifetime),
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="lax",
        )

    def clear_session(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name(request),
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="lax",
        )

    def _nonce_cookie(self, request: Request) -> str:
        return SIGN_IN_COOKIE if self.secure(request) else PLAIN_SIGN_IN_COOKIE

    def sign_in_nonce(self, request: Request) -> str:
        """The value the sign-in form must send back: the browser's, or a new one."""
        nonce = request.cookies.get(self._nonce_cookie(request), "")
        return nonce if len(nonce) == 43 else secrets.token_urlsafe(32)

    def keep_sign_in_nonce(self, request: Request, response: Response, nonce: str) -> None:
        response.set_cookie(
            self._nonce_cookie(request),
            nonce,
            max_age=3_600,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )

    def sign_in_nonce_matches(self, request: Request, sent: str) -> bool:
        kept = request.cookies.get(self._nonce_cookie(request), "")
        return len(kept) == 43 and hmac.compare_digest(kept, sent)

    # --- who ----------------------------------------------------------------------------------

    async def principal(self, request: Request) -> Principal | None:
        known = getattr(request.state, "principal", None)
        if isinstance(known, Principal):
            return known
        token = self.session_token(request)
        if not token:
            return None
        found = await in_thread(self.auth.limiter, self.auth.users.principal, token)
        if not isinstance(found, Principal):
            return None
        request.state.principal = found
        return found

    async def require(self, request: Request, permission: Permission | None) -> Principal:
        """The signed-in principal, if it has ``permission``; else a redirect to sign in
        (``SignInNeeded``) or a 403 (``ApiError``), which the app turns into pages."""
        principal = await self.principal(request)
        if principal is None:
            raise SignInNeeded(back_to(request))
        if permission is not None and not principal.can(permission):
            raise ApiError(403, f"the {principal.role} role does not allow this ({permission})")
        return principal

    # --- forms --------------------------------------------------------------------------------

    async def form(
        self, request: Request, permission: Permission | None
    ) -> tuple[Principal, dict[str, str]]:
        """A signed-in user's form, checked: from this site, with the session's CSRF token."""
        refuse_cross_site(request)
        principal = await self.require(request, permission)
        fields = await read_form(request)
        expected = csrf_token(self.session_token(request))
        if not hmac.compare_digest(expected, fields.get(CSRF_FIELD, "")):
            raise ApiError(403, "the form has expired or did not come from this site: reload it")
        return principal, fields


def refuse_cross_site(request: Request) -> None:
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise ApiError(403, "a form from another site cannot change anything here")


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form, bounded in size and fields; a field sent twice keeps the first."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, f"the form is over {MAX_FORM_BYTES:,} bytes")
    try:
        parsed = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the form could not be read") from None
    return {name: values[0] for name, values in parsed.items()}


def with_notice(back: str, notice: str) -> str:
    """``back`` (a path on this site) with ``done=notice``, the note a page shows after a
    form it sent went through (post, redirect, get)."""
    parts = urlsplit(safe_next(back))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "done"]
    return urlunsplit(("", "", parts.path, urlencode([*query, ("done", notice)]), ""))


def sign_in_url(back: str) -> str:
    return "/sign-in" + ("?next=" + quote(back, safe="/") if back and back != "/" else "")
