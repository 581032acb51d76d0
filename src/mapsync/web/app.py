"""The project's one HTTP app (`mapsync serve`, `mapsync daemon --serve`): the dashboard's pages,
its JSON API, the login routes, the webhook routes, `/metrics`, `/healthz` and `/readyz`, behind
`guard.Guard` (Host allow-list, security headers, body limit).

`/healthz`, `/readyz`, `/metrics`, the webhook routes (their own HMAC signature), `/login` and
the pages' `/static/` files need no login; every other route needs a viewer at least
(`auth.require_viewer`), `/openapi.json` included; FastAPI's `/docs` and `/redoc` are off.
"""

from __future__ import annotations

import html
import ipaddress
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from mapsync import metrics as metrics_module
from mapsync import webhooks
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from mapsync.web import api, auth, guard, pages


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches this machine only (`localhost`, 127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    loaded: LoadedSheet,
    store: StateStore,
    *,
    host: str,
    metrics: metrics_module.Metrics | None = None,
    ready_timeout: float = webhooks.READY_TIMEOUT_S,
) -> FastAPI:
    """The app for `loaded` over `store`, to listen on `host` (anonymous reads only on loopback:
    ValueError for a sheet allowing them on another address)."""
    web = loaded.sheet.web
    loopback = is_loopback(host)
    if web is not None and web.anonymous_reads and not loopback:
        raise ValueError(
            f"web.anonymous_reads is only allowed on a loopback address, not {host}: listen on "
            "127.0.0.1 behind a reverse proxy, or turn anonymous reads off"
        )
    app = FastAPI(title="mapsync", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.loaded = loaded
    app.state.store = store
    app.state.auth = auth.Auth(web, store.sessions, loopback=loopback)
    app.add_exception_handler(auth.AuthError, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_middleware(
        guard.Guard,
        hosts=web.hosts if web is not None else (),
        max_body=web.max_body if web is not None else 65_536,
    )
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    webhooks.add_routes(app, loaded, store, metrics=metrics, ready_timeout=ready_timeout)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(who: Annotated[auth.Principal, Depends(auth.require_viewer)]) -> JSONResponse:
        if who.via == "anonymous":  # the schema only for someone who logged in or has a token
            raise auth.AuthError(401, "log in (or send a bearer token) to read the API schema")
        return JSONResponse(app.openapi())

    return app


def _refused(request: Request, exc: auth.AuthError) -> Response:
    if exc.location is not None:
        return RedirectResponse(exc.location, status_code=303)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Every refusal in one shape: `{"error": "..."}` (an unknown `/api/` path included), or a
    small page for a browser asking for a page."""
    message = str(exc.detail) if exc.detail else "error"
    return _answer(request, exc.status_code, message, dict(exc.headers or {}))


def _invalid(request: Request, exc: RequestValidationError) -> Response:
    """A path, query or body that does not fit: 422 naming the first field and why (never the
    value sent: it may hold a secret)."""
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
    ]
    return _answer(request, 422, "; ".join(problems[:3]) or "invalid request", {})


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"


def _answer(request: Request, status: int, message: str, headers: dict[str, Any]) -> Response:
    path = request.url.path
    page = not path.startswith(("/api/", "/webhooks/")) and "text/html" in request.headers.get("accept", "")
    if not page:
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{status}</title>'
        f'<link rel="stylesheet" href="/static/app.css"></head><body><main><h1>{status}</h1>'
        f'<p id="problem">{html.escape(message)}</p><p><a href="/">Overview</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=headers)
