"""A plain HTTP client that keeps cookies the way a browser does on loopback.

Browsers treat ``http://127.0.0.1`` as a secure context and send it ``Secure`` cookies;
Python's cookie jar does not (it sends them over https only). The admin pages' tests talk to
a real collector on loopback, so this client keeps every cookie it is given by name and
sends them all back, and follows no redirect by itself, so tests can see each one.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import httpx

_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[^"]+)" value="(?P<value>[^"]*)">')


class Browser:
    def __init__(self, base: str, language: str = "en") -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
        self.language = language

    def close(self) -> None:
        self.client.close()

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Accept-Language": self.language}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.update(extra or {})
        return headers

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for line in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(
        self, path: str, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        # An empty params would drop a query written into the path.
        return self._keep(
            self.client.get(path, params=params or None, headers=self._headers(headers))
        )

    def post(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self._keep(self.client.post(path, data=data, headers=self._headers(headers)))

    def follow(self, response: httpx.Response) -> httpx.Response:
        """The page a 303 points to."""
        assert response.status_code in (302, 303), response.text
        return self.get(response.headers["location"])

    def sign_in(self, name: str, password: str) -> httpx.Response:
        form = self.get("/sign-in")
        fields = hidden_fields(form.text)
        return self.post(
            "/sign-in", {"nonce": fields["nonce"], "next": "/", "name": name, "password": password}
        )


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a page (the first of each name): CSRF tokens, nonces, keys."""
    found: dict[str, str] = {}
    for match in _HIDDEN.finditer(html):
        found.setdefault(match["name"], match["value"])
    return found
