"""Signing in and out of the admin pages, and choosing their language.

Sign-in goes through the same ``Sessions.attempt`` as the API's, so the limits on failed
tries (per name and per address) are one budget for both, and sign-out through the same
``Sessions.end``, so the metrics count both alike; a refused try shows the form again with the
reason, and the password is never sent back into the page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from schoolgate.server.errors import ApiError
from schoolgate.server.users import normal_name
from schoolgate.server.web._context import WebContext
from schoolgate.server.web._i18n import LANGUAGES
from schoolgate.server.web._render import LANGUAGE_COOKIE
from schoolgate.server.web._session import read_form, refuse_cross_site, safe_next


class SignInPages:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def _form(
        self, request: Request, next_path: str, name: str = "", problem: str = "", status: int = 200
    ) -> Response:
        web = self.ctx.web
        nonce = web.sign_in_nonce(request)
        response = self.ctx.render.page(
            request,
            "sign_in.html",
            {
                "next": next_path,
                "name": name,
                "problem": problem,
                "allowed": web.may_sign_in(request),
                "nonce": nonce,
            },
            status=status,
        )
        web.keep_sign_in_nonce(request, response, nonce)
        return response

    async def show(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next", "/"))
        if await self.ctx.web.principal(request) is not None:
            return RedirectResponse(next_path, status_code=303)
        return self._form(request, next_path)

    async def submit(self, request: Request) -> Response:
        web = self.ctx.web
        t = self.ctx.render.translator(request)
        refuse_cross_site(request)
        fields = await read_form(request)
        next_path = safe_next(fields.get("next", "/"))
        name = normal_name(fields.get("name", ""))[:64]
        password = fields.get("password", "")
        if not web.may_sign_in(request):
            return self._form(request, next_path, status=403)
        if not web.sign_in_nonce_matches(request, fields.get("nonce", "")):
            problem = t.gettext("The form had expired: sign in again.")
            return self._form(request, next_path, name, problem, status=400)
        if not name or not password:
            problem = t.gettext("Give your user name and password.")
            return self._form(request, next_path, name, problem, status=400)
        address = request.client.host if request.client is not None else ""
        try:
            signed = await self.ctx.sessions.attempt(name, password, address)
        except ApiError as exc:
            if exc.status == 429:
                problem = t.gettext(
                    "Too many failed sign-ins. Wait %(minutes)s minutes and try again.",
                    minutes=t.number(max(1, int(exc.headers["Retry-After"]) // 60 + 1))
                    if exc.headers
                    else "15",
                )
            elif exc.status == 401:
                problem = t.gettext("Wrong user name or password, or the account is disabled.")
            else:
                raise
            response = self._form(request, next_path, name, problem, status=exc.status)
            if exc.headers:
                response.headers.update(exc.headers)
            return response
        response = RedirectResponse(next_path, status_code=303)
        web.set_session(request, response, signed.token, self.ctx.session_seconds)
        return response

    async def sign_out(self, request: Request) -> Response:
        web = self.ctx.web
        await web.form(request, None)
        await self.ctx.sessions.end(web.session_token(request))
        response = RedirectResponse("/sign-in", status_code=303)
        web.clear_session(request, response)
        return response

    async def language(self, request: Request) -> Response:
        chosen = request.query_params.get("set", "")
        response = RedirectResponse(safe_next(request.query_params.get("next", "/")), 303)
        if chosen in LANGUAGES:
            response.set_cookie(
                LANGUAGE_COOKIE, chosen, max_age=365 * 86_400, path="/", samesite="lax"
            )
        return response


def routes(ctx: WebContext) -> list[Route]:
    pages = SignInPages(ctx)
    return [
        Route("/sign-in", pages.show, methods=["GET"]),
        Route("/sign-in", pages.submit, methods=["POST"]),
        Route("/sign-out", pages.sign_out, methods=["POST"]),
        Route("/language", pages.language, methods=["GET"]),
    ]
