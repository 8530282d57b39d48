"""Who may call the management service, as pure ASGI middleware in front of every route.

Two modes (:class:`bertops.ui.service.Settings`): a configured bearer token, compared in
constant time; or pass-through, where the caller's own Kubernetes token is handed to the
API server with each request and the cluster's RBAC decides. A token arrives as
``Authorization: Bearer ...`` (scripts, the API) or in the HttpOnly, SameSite=Strict
cookie the login form sets (the browser). Then:

- no or wrong token: 401 for ``/api/...``, a redirect to ``/login`` for pages;
- any method that changes something (not GET/HEAD): 403 unless the service was started
  with ``--allow-writes``; with the cookie it also needs the ``X-Bertops-Confirm``
  header, which a cross-site form cannot send, so a write is always a deliberate call
  from the UI's own script (after its confirmation dialog) or a client holding the token.

Used by :mod:`bertops.ui.app`; the token reaches the routes in ``scope["state"]``.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any

from bertops.ui.service import Settings

COOKIE = "bertops_token"
CONFIRM_HEADER = b"x-bertops-confirm"
PUBLIC_PREFIXES = ("/static/", "/login", "/logout", "/openapi.json", "/healthz")
SAFE_METHODS = ("GET", "HEAD")


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {key.lower(): value for key, value in scope.get("headers", [])}


def credentials(scope: dict[str, Any]) -> tuple[str | None, bool]:
    """(token, came from the cookie) of a request; the header wins over the cookie."""
    headers = _headers(scope)
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    except (KeyError, ValueError):  # a malformed Cookie header: as if there were none
        return None, False
    if COOKIE in cookies and cookies[COOKIE].value:
        return cookies[COOKIE].value, True
    return None, False


def token_matches(settings: Settings, token: str | None) -> bool:
    """Whether a token may use the service. Pass-through accepts any token here: the API
    server checks it on every call (and answers 401/403 itself)."""
    if token is None:
        return False
    if settings.pass_through:
        return True
    expected = settings.token or ""
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


async def _answer(send: Any, status: int, body: dict[str, Any], extra: list[Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class AuthMiddleware:
    """Refuses what the caller may not do before any route runs."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        token, via_cookie = credentials(scope)
        api = scope["path"].startswith("/api/")
        if not token_matches(self.settings, token):
            if api:
                await _answer(
                    send,
                    401,
                    {"error": "a bearer token is needed (Authorization: Bearer ...)"},
                    [(b"www-authenticate", b'Bearer realm="bertops"')],
                )
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [(b"location", b"/login"), (b"content-length", b"0")],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] not in SAFE_METHODS:
            if not self.settings.allow_writes:
                await _answer(
                    send, 403, {"error": "read-only: start `bertops ui --allow-writes`"}, []
                )
                return
            if via_cookie and not _headers(scope).get(CONFIRM_HEADER):
                await _answer(
                    send, 403, {"error": "a change needs the X-Bertops-Confirm header"}, []
                )
                return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)
