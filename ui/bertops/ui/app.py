"""The ASGI app of ``bertops ui``: JSON API (:mod:`bertops.ui.api`), its OpenAPI spec at
``/openapi.json``, the HTML pages (:mod:`bertops.ui.pages`), the pinned static assets
(``static/``, shipped in the wheel and served here: nothing is fetched at run time), the
login form, all behind :class:`bertops.ui.auth.AuthMiddleware`.

Built by :func:`create_app`, called by ``bertops ui`` (:mod:`bertops.cli.models`) and by the
tests, which run it with uvicorn on loopback.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

from kubernetes import client
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bertops.ui import api, openapi, pages
from bertops.ui.auth import COOKIE, AuthMiddleware, token_matches
from bertops.ui.catalog import Catalog, CatalogError, token_configuration
from bertops.ui.service import DriftLog, Settings

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 8192
MAX_BODY_BYTES = 65536


class Clients:
    """One Catalog per caller: the service's own, or (pass-through) one per token, kept
    in a small LRU so each caller's connection pool is reused and closed when evicted."""

    def __init__(self, base: Catalog, settings: Settings, size: int = 32) -> None:
        self.base, self.settings, self.size = base, settings, size
        self._by_token: OrderedDict[str, Catalog] = OrderedDict()
        self._lock = threading.Lock()

    def catalog(self, token: str | None) -> Catalog:
        if not self.settings.pass_through or token is None:
            return self.base
        with self._lock:
            if token in self._by_token:
                self._by_token.move_to_end(token)
                return self._by_token[token]
            configuration = token_configuration(self.base.api_client.configuration, token)
            found = Catalog(client.ApiClient(configuration), self.base.namespace)
            self._by_token[token] = found
            while len(self._by_token) > self.size:
                _, evicted = self._by_token.popitem(last=False)
                evicted.api_client.close()
            return found

    def close(self) -> None:
        with self._lock:
            for cached in self._by_token.values():
                cached.api_client.close()
            self._by_token.clear()


LOGIN_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bertops · sign
in</title><link rel="stylesheet" href="/static/bertops.css"></head><body><main class="login">
<h1>bertops</h1><p>{message}</p><form method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Sign in</button></form></main></body></html>"""


async def login_form(request: Request) -> Response:
    what = "Kubernetes" if request.app.state.settings.pass_through else "bertops ui"
    return HTMLResponse(LOGIN_FORM.format(message=f"Paste your {what} bearer token."))


def _check_pass_through(catalog: Catalog) -> None:
    catalog.objects("BertModel")  # the API server says whether the token may read here


async def login(request: Request) -> Response:
    """Check the token, then keep it in an HttpOnly, SameSite=Strict cookie."""
    settings: Settings = request.app.state.settings
    raw = await request.body()
    token = (parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", "replace")).get("token") or [""])[0]
    valid = bool(token) and token_matches(settings, token)
    if valid and settings.pass_through:
        try:
            await run_in_threadpool(_check_pass_through, request.app.state.clients.catalog(token))
        except CatalogError:
            valid = False
    if not valid:
        page = LOGIN_FORM.format(message="That token was not accepted.")
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=settings.secure_cookie
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.spec())


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(settings: Settings, catalog: Catalog) -> Starlette:
    """The management service for one namespace, reading through ``catalog``."""
    clients = Clients(catalog, settings)
    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *api.ROUTES,
        *pages.ROUTES,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        clients.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, settings=settings)],
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,  # no endpoint takes more than a login form
    )
    app.state.settings = settings
    app.state.clients = clients
    app.state.drift_log = DriftLog()
    return app
