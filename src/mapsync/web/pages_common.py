"""What every dashboard page shares: the read/action modules, rendering, the flash message."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mapsync.web.auth import Principal, safe_next
from mapsync.web.templating import templates

FLASH_COOKIE = "mapsync_flash"
NAV = (
    ("/", "Overview"),
    ("/errors", "Errors"),
    ("/unmapped", "Unmapped"),
    ("/orders", "Orders"),
    ("/queues", "Queues"),
    ("/alerts", "Alerts"),
    ("/reconcile", "Reconcile"),
    ("/workers", "Workers"),
    ("/audit", "Audit"),
)


def state(request: Request) -> tuple[Any, Any]:
    """The loaded sheet and the state store the app was built with."""
    return request.app.state.loaded, request.app.state.store


def render(request: Request, template: str, who: Principal, **context: Any) -> HTMLResponse:
    """A page with the nav, the flash message (read once, then cleared) and the principal."""
    flash = read_flash(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "who": who,
            "operator": who.role == "operator",
            "csrf": who.csrf or "",
            "flash": flash,
            "nav": NAV,
            "path": request.url.path,
            **context,
        },
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(request: Request, to: str, text: str, kind: str = "ok") -> Response:
    """Post/redirect/get: 303 to `to` with a short flash cookie (never a secret in it)."""
    response = RedirectResponse(to, status_code=303)
    raw = json.dumps({"kind": kind, "text": text[:300]}).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(raw).decode(),
        max_age=60,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


def _secure(request: Request) -> bool:
    """The Secure flag as the sheet's `web.secure_cookies` says (the scheme when it has no `web:`)."""
    web = getattr(getattr(request.app.state.loaded, "sheet", None), "web", None)
    secure = getattr(web, "secure_cookies", None)
    return bool(secure) if secure is not None else request.url.scheme == "https"


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict):
        return None
    kind = "error" if data.get("kind") == "error" else "ok"
    return {"kind": kind, "text": str(data.get("text", ""))[:300]}


def local_path(value: str | None, fallback: str) -> str:
    """A redirect target only when it is a path on this site (`auth.safe_next`), else `fallback`."""
    return value if value and safe_next(value) == value else fallback


def when(value: Any) -> str:
    """ISO-8601 text (or a datetime) shown as `YYYY-MM-DD HH:MM:SS`."""
    if value is None or value == "":
        return "—"
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    text = str(value).replace("T", " ")
    return text[:19]


def seconds(value: Any) -> str:
    """A duration in seconds as `1h 02m`, `3m 05s`, `12.3s`."""
    if value is None or value == "":
        return "—"
    try:
        s = float(value)
    except (TypeError, ValueError):
        return str(value)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 60:
        return f"{sign}{s:.1f}s" if s < 10 and s != int(s) else f"{sign}{int(s)}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{sign}{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{sign}{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{sign}{d}d {h:02d}h"


def sync_state(row: dict[str, Any]) -> str:
    """The overview's visual state of a sync: paused, failing, late or ok."""
    if row.get("paused"):
        return "paused"
    last = row.get("last_run") or {}
    if last.get("status") in ("failed", "error") or (row.get("dead_errors") or 0) > 0:
        return "failing"
    if (row.get("open_errors") or 0) > 0 or (row.get("open_alerts") or 0) > 0:
        return "failing"
    if row.get("on_time") is False:
        return "late"
    return "ok"


def without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """A row without some of its keys (the generic tables show the rest)."""
    return {k: v for k, v in row.items() if k not in names}


templates.env.filters["when"] = when
templates.env.filters["without"] = without
templates.env.filters["seconds"] = seconds
templates.env.globals["sync_state"] = sync_state
