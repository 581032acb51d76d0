"""Who is asking: users and roles from the sheet's `web:`, sessions, bearer tokens, CSRF, logins.

- A **person** logs in at `/login` (user + password, scrypt-verified); the answer sets the
  `mapsync_session` cookie (HttpOnly, SameSite=Strict, Secure per `web.secure_cookies`, Path=/)
  with a fresh random token: the state store keeps only its SHA-256 (`store.sessions`) with the
  session's CSRF token and expiry. A login always opens a new session (and closes the one the
  browser came with); `POST /logout` and `mapsync web sessions --revoke` close them.
- A **program** sends `Authorization: Bearer <token>` (the user's `token:`), compared in
  constant time against every token user. No cookie, so no CSRF token is needed.
- **Anonymous reads** (`web.anonymous_reads`): a viewer named `anonymous`, only when the app
  listens on loopback; never an operator.
- **Operator actions** need the role `operator` and, for a session, its CSRF token in the
  `X-CSRF-Token` header or the form field `csrf`.
- **Login rate limiting**: `web.login_attempts` failed logins per user and per client address
  (the socket's, never `X-Forwarded-For`) in 15 minutes, then 429 until the window slides. Kept in
  the process's memory (a restart forgets them; each process counts its own).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import html
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mapsync.sheet.web_models import WebConfig
from mapsync.web import guard, passwords

log = logging.getLogger("mapsync.web")
COOKIE = "mapsync_session"
CSRF_HEADER = "x-csrf-token"
WINDOW_S = 15 * 60
_TOUCH_EVERY_S = 60.0
_MAX_TRACKED = 10_000
NO_USERS = "no dashboard users: add `web: users` to the sheet (docs/dashboard.md)"


@dataclasses.dataclass(frozen=True)
class Principal:
    user: str  # "anonymous" for anonymous reads
    role: str  # "viewer" | "operator"
    csrf: str | None  # the session's CSRF token (None for bearer tokens and anonymous)
    via: str  # "session" | "token" | "anonymous"


class SessionStore(Protocol):
    """`store.sessions` (mapsync.state.ports.Sessions)."""

    def open_session(self, user: str, ttl: dt.timedelta) -> tuple[str, str]: ...
    def session(self, token: str) -> dict[str, Any] | None: ...
    def touch_session(self, token: str) -> None: ...
    def close_session(self, token: str) -> None: ...
    def close_sessions(self, user: str | None = None) -> int: ...


class AuthError(Exception):
    """A request refused: `status` and a message for the client (never a secret); `location` for
    a redirect to the login page."""

    def __init__(self, status: int, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.location = status, message, location


class Attempts:
    """Failed logins per key in a sliding window (in memory, bounded)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self.failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()  # logins are judged on the server's worker threads

    def _recent(self, key: str) -> collections.deque[float]:
        seen = self.failures.get(key)
        if seen is None:
            return collections.deque()
        while seen and seen[0] <= self.clock() - WINDOW_S:
            seen.popleft()
        return seen

    def blocked(self, *keys: str) -> bool:
        with self._lock:
            return any(len(self._recent(k)) >= self.limit for k in keys)

    def fail(self, *keys: str) -> None:
        with self._lock:
            if len(self.failures) >= _MAX_TRACKED:  # forget the stalest key first
                stalest = min(self.failures, key=lambda k: self.failures[k][-1] if self.failures[k] else 0.0)
                del self.failures[stalest]
            for key in keys:
                self.failures.setdefault(key, collections.deque()).append(self.clock())

    def clear(self, key: str) -> None:
        with self._lock:
            self.failures.pop(key, None)


class Auth:
    """The app's judge of requests (`app.state.auth`)."""

    def __init__(
        self,
        web: WebConfig | None,
        sessions: SessionStore,
        *,
        loopback: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.web = web or WebConfig()
        self.sessions = sessions
        self.anonymous = self.web.anonymous_reads and loopback
        self.hosts = frozenset((*guard.ALWAYS_ALLOWED, *self.web.hosts))
        self.attempts = Attempts(self.web.login_attempts, clock)
        self.clock = clock
        self._touched: dict[str, float] = {}
        self._tokens = [(name, u.token) for name, u in self.web.users.items() if u.token]

    @property
    def open(self) -> bool:
        """Whether anyone can get in at all (users, or anonymous reads)."""
        return bool(self.web.users) or self.anonymous

    def principal(self, request: Request) -> Principal | None:
        """Who sent `request` (bearer token, then session cookie, then anonymous), or None."""
        given = request.headers.get("authorization", "")
        if given[:7].lower() == "bearer ":
            return self._bearer(given[7:].strip())
        cookie = request.cookies.get(COOKIE)
        if cookie:
            found = self._session(cookie)
            if found is not None:
                return found
        if self.anonymous:
            return Principal("anonymous", "viewer", None, "anonymous")
        return None

    def _bearer(self, token: str) -> Principal | None:
        match = None
        for name, expected in self._tokens:  # all of them, whatever matches: no early exit
            if passwords.same_token(token, expected) and match is None:
                match = name
        return None if match is None else Principal(match, self.web.users[match].role, None, "token")

    def _session(self, token: str) -> Principal | None:
        live = self.sessions.session(token)
        if live is None:
            return None
        user = self.web.users.get(str(live["user"]))
        if user is None or user.password_hash is None:  # removed from the sheet since
            return None
        now = self.clock()
        if now - self._touched.get(token, -_TOUCH_EVERY_S - 1) > _TOUCH_EVERY_S:
            if len(self._touched) >= _MAX_TRACKED:
                self._touched.clear()
            self._touched[token] = now
            self.sessions.touch_session(token)
        return Principal(str(live["user"]), user.role, str(live["csrf"]), "session")

    def login(self, user: str, password: str, client: str) -> tuple[str, str]:
        """(session token, csrf) for a right password; AuthError 429 when rate limited, 401 else."""
        keys = (f"user:{user}", f"addr:{client}")
        found = self.web.users.get(user)
        # an unknown name is logged as such: it may be a password typed into the wrong field
        named = user if found is not None else "(unknown)"
        if self.attempts.blocked(*keys):
            log.warning(
                "web_login_limited", extra={"action": "web_login_limited", "user": named, "client": client}
            )
            raise AuthError(429, "too many failed logins: wait 15 minutes")
        stored = found.password_hash if found is not None else None
        ok = passwords.verify_password(password, stored or passwords.dummy_hash())
        if not ok or stored is None:
            self.attempts.fail(*keys)
            log.warning(
                "web_login_failed", extra={"action": "web_login_failed", "user": named, "client": client}
            )
            raise AuthError(401, "wrong user or password")
        log.info("web_login", extra={"action": "web_login", "user": user, "client": client})
        self.attempts.clear(keys[0])
        return self.sessions.open_session(user, self.web.session_ttl)

    def allowed_origin(self, request: Request) -> bool:
        """Whether the Origin (else Referer) header, when given, names an allowed host."""
        given = request.headers.get("origin") or request.headers.get("referer")
        if given is None:
            return True
        name = guard.host_name(urllib.parse.urlsplit(given).netloc)
        return name is not None and name in self.hosts


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/openapi.json"


def _refuse(request: Request, auth: Auth) -> AuthError:
    if not auth.open:
        return AuthError(401, NO_USERS)
    if _is_api(request):
        return AuthError(401, "log in or send a bearer token")
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return AuthError(303, "log in", "/login?" + urllib.parse.urlencode({"next": wanted}))


def require_viewer(request: Request) -> Principal:
    """FastAPI dependency: anyone logged in (or anonymous reads); else 401 (API) or a redirect
    to the login page (pages)."""
    auth: Auth = request.app.state.auth
    who = auth.principal(request)
    if who is None:
        raise _refuse(request, auth)
    return who


async def require_operator(request: Request) -> Principal:
    """FastAPI dependency: an operator; a session's request must carry its CSRF token."""
    auth: Auth = request.app.state.auth
    who = await run_in_threadpool(auth.principal, request)
    if who is None or who.via == "anonymous":
        raise _refuse(request, auth)
    if who.role != "operator":
        raise AuthError(403, "this needs the operator role")
    if who.via == "session" and not await _csrf_ok(request, who):
        raise AuthError(403, "missing or wrong CSRF token: reload the page")
    return who


async def _csrf_ok(request: Request, who: Principal) -> bool:
    assert who.csrf is not None
    given = request.headers.get(CSRF_HEADER)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given is None and kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        field = (await request.form()).get("csrf")  # cached: the handler reads the same form
        given = field if isinstance(field, str) else None
    return given is not None and passwords.same_token(given, who.csrf)


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(next_: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    message = f'<p id="flash" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mapsync: log in</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><main class="login"><h1>mapsync</h1>{message}
<form id="login" method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(safe_next(next_))}">
<label>User <input name="user" autocomplete="username" required maxlength="64"></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form></main></body></html>
"""
    return HTMLResponse(body, status_code=status)


router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_form(next: str = "/") -> HTMLResponse:
    return login_page(next)


@router.post("/login")
def login(
    request: Request,
    user: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    auth: Auth = request.app.state.auth
    if not auth.allowed_origin(request):
        return login_page(next, "this login form was not sent from this site", 403)
    client = request.client.host if request.client else "?"  # the socket's; never X-Forwarded-For
    try:
        token, _csrf = auth.login(user, password, client)
    except AuthError as exc:
        return login_page(next, exc.message, exc.status)
    old = request.cookies.get(COOKIE)
    if old:
        auth.sessions.close_session(old)  # rotated: the session the browser came with is gone
    request.app.state.store.audit.record_action(user, "login", None, {"client": client, "via": "web"})
    answer = RedirectResponse(safe_next(next), status_code=303)
    answer.set_cookie(
        COOKIE,
        token,
        max_age=int(auth.web.session_ttl.total_seconds()),
        path="/",
        secure=auth.web.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    token = request.cookies.get(COOKIE)
    who = await run_in_threadpool(auth.principal, request) if token else None
    if who is not None and who.via == "session":
        if not await _csrf_ok(request, who):
            raise AuthError(403, "missing or wrong CSRF token: reload the page")
        assert token is not None
        await run_in_threadpool(auth.sessions.close_session, token)
        audit = request.app.state.store.audit
        await run_in_threadpool(audit.record_action, who.user, "logout", None, {"via": "web"})
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/", secure=auth.web.secure_cookies, httponly=True, samesite="strict")
    return answer
