"""A local stand-in for the CIMcloud API (FastAPI + SQLite), for tests, demos and benchmarks.

It implements what CIMcloud's public docs say (see docs/rest.md), and marks every behaviour the
docs leave open with INFERRED below; those are switchable where a client must cope with either.

Documented: `POST /{site}/authenticate` (token + expiration, 7 days); Basic auth;
`healthcheck/canary` (no auth), `healthcheck`, `validate` (401 on bad credentials);
`GET /{site}/{resource}/{searchstring}/{page}` with 50 per page and page 0 = page 1; POST =
upsert, PUT = update only, by primary key (`key`, wins) or user key; the success answer
`{"action":"DataImported","success":true,"importedRecords":…,"updatedRecords":…,
"recordCountInRequest":…,"message":null}`; values as strings; more than 10 records per call go to
an asynchronous queue; `X-RateLimit-Limit/Remaining/Reset` headers; OnlineOrders returns orders
with `exported = '0'` and sets `exported = '1'`.

INFERRED: GET answers a JSON array; an exhausted budget answers 429 with `Retry-After`; a
partially refused call answers `success: false` with the counts of what was applied and a
message naming the refused records; a PUT of a missing record is refused that way; a queued call
answers `action: "Queued"` (with `jobId` and `GET /{site}/jobs/{id}` only under
`async_contract="jobs"`); 401 bodies carry a `message`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets as secrets_
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from mapsync.testing import sandbox_search
from mapsync.testing.sandbox_store import Store, as_string

PAGE = 50
SYNC_LIMIT = 10
DEFAULT_RESOURCES = {"accounts": "ref_id", "products": "sku", "customers": "username", "orders": "c_ordnum"}
ALIASES = {"account": "accounts", "product": "products", "customer": "customers", "order": "orders"}


@dataclasses.dataclass
class Config:
    site: str = "sandbox"
    auth_key: str = "sandbox-key"
    username: str = "sandbox"
    password: str = "sandbox-password"  # the sandbox's own fixed test credential
    token_ttl: dt.timedelta = dt.timedelta(days=7)
    budget: list[tuple[int, dt.timedelta]] = dataclasses.field(default_factory=list)  # empty: off
    async_contract: str = "none"  # none | jobs (INFERRED, switchable)
    queue_delay: float = 0.3  # seconds before a queued (> 10) call is applied
    resources: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    db_path: str = ""


@dataclasses.dataclass
class Faults:
    """Test switches: records refused by user key, and answers that under-report their counts."""

    reject: dict[str, str] = dataclasses.field(default_factory=dict)  # user key → message
    undercount: int = 0  # the next N write answers report one record fewer than applied


class Sandbox:
    """The app's state; `create_app` wires it into FastAPI."""

    def __init__(self, config: Config) -> None:
        self.config = config
        if not config.db_path:
            config.db_path = str(Path(tempfile.mkdtemp(prefix="cimcloud-sandbox-")) / "sandbox.db")
        self.store = Store(config.db_path)
        self.faults = Faults()
        self._timers: list[threading.Timer] = []

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.store.close()

    # ----------------------------------------------------------------- auth and budget

    def credential(self, headers: Any, path: str, body: bytes) -> tuple[str, bool]:
        """(who, authenticated) for a request."""
        value = headers.get("authorization", "")
        if value.lower().startswith("bearer "):
            user = self.store.token_user(value[7:].strip())
            return (user, True) if user else ("invalid-token", False)
        if value.lower().startswith("basic "):
            import base64

            try:
                user, _, password = base64.b64decode(value[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "invalid-basic", False
            ok = user == self.config.username and secrets_.compare_digest(password, self.config.password)
            return user, ok
        if path == "authenticate":
            try:
                return str(json.loads(body or b"{}").get("AuthUserName", "anonymous")), False
            except (ValueError, AttributeError):
                return "anonymous", False
        return "anonymous", False

    def budget_state(self, who: str, now: float) -> tuple[dict[str, str], float | None]:
        """Rate-limit headers for `who`, and the seconds to wait if a limit is spent."""
        if not self.config.budget:
            return {}, None
        wait: float | None = None
        headers: dict[str, str] = {}
        longest = max(self.config.budget, key=lambda lim: lim[1])
        for limit, window in self.config.budget:
            seconds = window.total_seconds()
            used, oldest = self.store.spent(who, now - seconds)
            reset = (oldest + seconds - now) if oldest is not None else seconds
            if used >= limit:
                wait = max(wait or 0.0, reset)
            if (limit, window) == longest:
                headers = {
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": str(max(0, limit - used - 1)),
                    "X-RateLimit-Reset": str(max(0, int(reset + 0.999))),
                }
        return headers, wait

    def authenticate(self, body: Any) -> tuple[int, Any]:
        c = self.config
        if (
            not isinstance(body, dict)
            or body.get("AuthKey") != c.auth_key
            or body.get("AuthUserName") != c.username
            or not secrets_.compare_digest(str(body.get("AuthPassword", "")), c.password)
        ):
            return 401, {"message": "Invalid AuthKey, AuthUserName or AuthPassword."}
        token = secrets_.token_urlsafe(24)
        expires = time.time() + c.token_ttl.total_seconds()
        self.store.add_token(token, c.username, expires)
        when = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"expiration": when, "token": token}

    # ----------------------------------------------------------------- resources

    def resource(self, name: str) -> tuple[str, str] | None:
        table = ALIASES.get(name.lower(), name.lower())
        key = self.config.resources.get(table)
        return (table, key) if key else None

    def read(
        self, name: str, search: str, page_text: str, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        if name.lower() == "onlineorders":
            return self.online_orders()
        found = self.resource(name)
        if found is None:
            return 404, {"message": f"Resource {name!r} is not assigned to this authorization."}
        if query:
            return self.read_query(found, query)
        try:
            match = sandbox_search.parse(search) if search else (lambda r: True)
        except sandbox_search.SearchError as exc:
            return 400, {"message": str(exc)}
        try:
            page = max(1, int(page_text or "0"))  # documented: empty or 0 is the first page
        except ValueError:
            return 400, {"message": f"page number {page_text!r} is not a number"}
        rows = [r for r in self.store.all(found[0]) if match(r)]
        return 200, rows[(page - 1) * PAGE : page * PAGE]

    def read_query(self, found: tuple[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """Not CIMcloud's (its reads carry no query string): the generic REST connector's
        dialect, so a `kind: rest` source can read the sandbox too: `?page=N&per_page=M` (page 1
        first) and `?keys=a,b` (user keys, comma-separated)."""
        table, key_field = found
        try:
            size = int(query.get("per_page", PAGE))
            page = int(query.get("page", 1))
        except ValueError:
            return 400, {"message": "page and per_page must be numbers"}
        rows = self.store.all(table)
        if "keys" in query:
            wanted = {k.lower() for k in query["keys"].split(",")}
            rows = [r for r in rows if str(r.get(key_field, "")).lower() in wanted]
        return 200, rows[(max(1, page) - 1) * size : max(1, page) * size]

    def online_orders(self) -> tuple[int, Any]:
        """Orders with exported = '0', marked exported = '1' by this very GET (documented)."""
        out = []
        for row in self.store.all("orders"):
            if row.get("exported", "0") in ("0", ""):
                self.store.set_fields(int(row["key"]), {"exported": "1"})
                out.append({**row, "o_key": row["key"], "exported": "0"})
            if len(out) == PAGE:
                break
        return 200, out

    def write(self, name: str, body: Any, *, update_only: bool) -> tuple[int, Any]:
        found = self.resource(name)
        if found is None:
            return 404, {"message": f"Resource {name!r} is not assigned to this authorization."}
        items = body if isinstance(body, list) else [body]
        if not items or not all(isinstance(i, dict) for i in items):
            return 400, {"success": False, "message": "The body must be a record or an array of records."}
        if any(isinstance(v, dict | list) for i in items for v in i.values()):
            return 400, {
                "success": False,
                "message": "Nested payloads are not supported.",
            }
        if len(items) > SYNC_LIMIT:
            return self.enqueue(found, items, update_only)
        answer = self.apply(found, items, update_only)
        return 200, answer

    def apply(self, found: tuple[str, str], items: list[dict[str, Any]], update_only: bool) -> dict[str, Any]:
        table, key_field = found
        imported = updated = 0
        failures: list[str] = []
        for item in items:
            user_key = as_string(item.get(key_field))
            if not user_key and not item.get("key"):
                failures.append(f"record without {key_field}")
                continue
            if user_key in self.faults.reject:
                failures.append(f"{key_field} {user_key}: {self.faults.reject[user_key]}")
                continue
            outcome = self.store.upsert(table, key_field, item, update_only=update_only)
            if outcome == "imported":
                imported += 1
            elif outcome == "updated":
                updated += 1
            else:
                failures.append(f"{key_field} {user_key}: record not found")
        if self.faults.undercount > 0:
            self.faults.undercount -= 1
            if updated:
                updated -= 1
            elif imported:
                imported -= 1
        return {
            "action": "DataImported",
            "success": not failures,
            "importedRecords": imported,
            "updatedRecords": updated,
            "recordCountInRequest": len(items),
            "message": "; ".join(failures) if failures else None,
        }

    def enqueue(
        self, found: tuple[str, str], items: list[dict[str, Any]], update_only: bool
    ) -> tuple[int, Any]:
        """INFERRED: the queue's answer and its results are not documented."""
        job = secrets_.token_hex(8)
        self.store.add_job(job, time.time())

        def run() -> None:
            answer = self.apply(found, items, update_only)
            self.store.finish_job(job, [answer])

        timer = threading.Timer(self.config.queue_delay, run)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        answer: dict[str, Any] = {
            "action": "Queued",
            "success": True,
            "importedRecords": 0,
            "updatedRecords": 0,
            "recordCountInRequest": len(items),
            "message": "More than 10 records: added to the asynchronous queue.",
        }
        if self.config.async_contract == "jobs":
            answer["jobId"] = job
        return 202, answer

    def health(self) -> dict[str, Any]:
        return {
            "status": "Running",
            "productionDatabase": "sandbox",
            "apiVersionNumber": "sandbox-1",
            "databaeConnection": "Connected",  # (sic), as documented
            "usingStagingDB": False,
            "databaseConnectionError": None,
        }


_SEGMENTS = re.compile(r"/+")


def create_app(sandbox: Sandbox) -> FastAPI:
    """The FastAPI app: one catch-all route, so the raw path can be split as CIMcloud does."""
    app = FastAPI(title="CIMcloud sandbox (mapsync)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = sandbox

    @app.get("/_sandbox/requests")
    def requests_log() -> Any:  # the log of every request: time, method, path, status, credential
        return sandbox.store.requests()

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def any_route(request: Request, rest: str) -> Response:
        raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        parts = [p for p in _SEGMENTS.split(raw) if p != ""]
        body = await request.body()
        now = time.time()
        method = request.method
        if not parts or parts[0] != sandbox.config.site:
            return _answer(404, {"message": "Unknown site."}, {})
        path = "/".join(parts[1:])
        route = urllib.parse.unquote(parts[1]).lower() if len(parts) > 1 else ""
        if route == "healthcheck" and len(parts) > 2 and parts[2].lower() == "canary":
            sandbox.store.log(now, method, path, 200, "anonymous", False)
            return _answer(200, {"status": "Running"}, {})
        who, authed = sandbox.credential(request.headers, route, body)
        headers, wait = sandbox.budget_state(who, now)
        if wait is not None:
            sandbox.store.log(now, method, path, 429, who, False)
            retry = {"Retry-After": str(max(1, int(wait + 0.999)))}
            return _answer(429, {"message": "API rate limit exceeded."}, {**headers, **retry})
        query = dict(urllib.parse.parse_qsl(request.scope.get("query_string", b"").decode("latin-1")))
        status, answer = _dispatch(sandbox, method, route, parts, body, authed, query)
        sandbox.store.log(now, method, path, status, who, True)
        return _answer(status, answer, headers)

    return app


def _dispatch(
    sandbox: Sandbox,
    method: str,
    route: str,
    parts: list[str],
    body: bytes,
    authed: bool,
    query: dict[str, str] | None = None,
) -> Any:
    if route == "authenticate" and method == "POST":
        return sandbox.authenticate(_json(body))
    if not authed:
        return 401, {"message": "Authorization has been denied for this request."}
    if route == "validate":
        return 200, {"status": "Valid"}
    if route == "healthcheck":
        return 200, sandbox.health()
    if route == "jobs" and sandbox.config.async_contract == "jobs" and len(parts) > 2 and method == "GET":
        job = sandbox.store.job(parts[2])
        return (200, job) if job else (404, {"message": "Unknown job."})
    if method == "GET":
        search, page = _search_and_page(parts[2:])
        return sandbox.read(urllib.parse.unquote(parts[1]), search, page, query)
    if method in ("POST", "PUT"):
        data = _json(body)
        if data is None:
            return 400, {"success": False, "message": "The body is not JSON."}
        return sandbox.write(urllib.parse.unquote(parts[1]), data, update_only=method == "PUT")
    return 405, {"message": f"{method} is not supported here."}


_DATE_HEAD = re.compile(r"~\d{1,2}/\d{1,2}$")


def _search_and_page(rest: list[str]) -> tuple[str, str]:
    """Split `{searchstring}/{page}`. The docs' own example puts `1/1/2021` in the searchstring,
    so slashes may belong to it (INFERRED): a last, numeric segment is the page unless it
    completes a `~M/D/YYYY` date."""
    if not rest:
        return "", ""
    if len(rest) == 1:
        return ("", rest[0]) if rest[0].isdigit() else (rest[0], "")
    head = "/".join(rest[:-1])
    if rest[-1].isdigit() and not _DATE_HEAD.search(head):
        return head, rest[-1]
    return "/".join(rest), ""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def _answer(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)
