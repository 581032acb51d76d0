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
with `exported = '0'` and sets `exported = '1'` (its lines and checks: `sandbox_orders`).

INFERRED: GET answers a JSON array; an exhausted budget answers 429 with `Retry-After`; a
partially refused call answers `success: false` with the counts of what was applied and a
message naming the refused records; a PUT of a missing record is refused that way; a queued call
answers `action: "Queued"` (with `jobId` and `GET /{site}/jobs/{id}` only under
`async_contract="jobs"`); 401 bodies carry a `message`; the shape of OnlineOrders' answer
(`online_orders_lines`: its lines nested under `lines_field`, or read separately from
`order_detail`) and the fields an order accepts (`order_fields`), see `sandbox_orders`.

INFERRED for reconciliation (issue 18, `reconcile.api_side`): an `invoices` resource keyed by
`invoice_no` (CIMcloud documents none; a business check against it is verified here only), and the
portal's customer balance as a plain `balance` field on `customers` (records take any field, so
nothing but this note is needed). Both list like every resource: 50 per page, no record count.
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, Response

from mapsync.testing import sandbox_control, sandbox_orders, sandbox_search
from mapsync.testing.sandbox_store import PAGE, Store, as_string

SYNC_LIMIT = 10
DEFAULT_RESOURCES = {
    "accounts": "ref_id",
    "products": "sku",
    "customers": "username",
    "orders": "c_ordnum",
    "order_detail": "line_id",  # order lines (INFERRED: see sandbox_orders)
    "invoices": "invoice_no",  # INFERRED: CIMcloud documents no invoices resource (business checks)
}
ALIASES = {
    "account": "accounts",
    "product": "products",
    "customer": "customers",
    "order": "orders",
    "orderdetail": "order_detail",
    "order_details": "order_detail",
    "invoice": "invoices",
}


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
    online_orders_lines: Literal["nested", "separate"] = "nested"  # INFERRED, see sandbox_orders
    lines_field: str = "details"  # where nested lines go (INFERRED)
    order_fields: frozenset[str] | None = None  # None: an order accepts any field (INFERRED)


@dataclasses.dataclass
class Faults:
    """Test switches: records refused by user key, answers that under-report their counts, and
    OnlineOrders GETs that fail (settable over HTTP too: `POST /_sandbox/faults`)."""

    reject: dict[str, str] = dataclasses.field(default_factory=dict)  # user key → message
    undercount: int = 0  # the next N write answers report one record fewer than applied
    online_orders_lost: int = 0  # the next N OnlineOrders GETs mark orders exported, then answer 500
    online_orders_refuse: int = 0  # the next N OnlineOrders GETs answer 503 before any side effect


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
            return sandbox_search.query_page(self.store.all(found[0]), found[1], query, PAGE)
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

    def online_orders(self) -> tuple[int, Any]:
        """Orders with exported = '0', marked exported = '1' by this very GET (documented); the
        faults `online_orders_refuse` (503, nothing marked) and `online_orders_lost` (marked, 500)."""
        if self.faults.online_orders_refuse > 0:
            self.faults.online_orders_refuse -= 1
            return 503, {"message": "Service unavailable (sandbox fault)."}
        nested = self.config.online_orders_lines == "nested"
        out = sandbox_orders.export_page(self.store, nested=nested, lines_field=self.config.lines_field)
        if self.faults.online_orders_lost > 0:
            self.faults.online_orders_lost -= 1
            return 500, {"message": "An error has occurred (sandbox fault: the answer is lost)."}
        return 200, out

    # ----------------------------------------------------------------- test helpers (no HTTP)

    def add_order(self, order: dict[str, Any], lines: Iterable[dict[str, Any]] = ()) -> str:
        """Store an order and its lines (see `sandbox_orders.add_order`); its `c_ordnum` back."""
        return sandbox_orders.add_order(self.store, order, lines)

    def order(self, c_ordnum: str) -> dict[str, Any] | None:
        """The stored order as the standard GET shows it, its lines under `lines_field`."""
        found = sandbox_orders.orders_view(self.store, self.config.lines_field, c_ordnum)
        return found[0] if found else None

    def orders(self) -> list[dict[str, Any]]:
        """Every stored order, each with its lines under `lines_field`."""
        return sandbox_orders.orders_view(self.store, self.config.lines_field)

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
            unknown = (
                sandbox_orders.unknown_fields(self.config.order_fields, item) if table == "orders" else []
            )
            if unknown:
                failures.append(f"{key_field} {user_key}: unknown field(s) {', '.join(unknown)}")
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

    sandbox_control.add_routes(app, sandbox.store.requests, sandbox.orders, lambda: sandbox.faults)

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def any_route(request: Request, rest: str) -> Response:
        raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        parts = [p for p in _SEGMENTS.split(raw) if p != ""]
        body = await request.body()
        now = time.time()
        method = request.method
        if not parts or parts[0] != sandbox.config.site:
            return sandbox_control.answer(404, {"message": "Unknown site."}, {})
        path = "/".join(parts[1:])
        route = urllib.parse.unquote(parts[1]).lower() if len(parts) > 1 else ""
        if route == "healthcheck" and len(parts) > 2 and parts[2].lower() == "canary":
            sandbox.store.log(now, method, path, 200, "anonymous", False)
            return sandbox_control.answer(200, {"status": "Running"}, {})
        who, authed = sandbox.credential(request.headers, route, body)
        headers, wait = sandbox.budget_state(who, now)
        if wait is not None:
            sandbox.store.log(now, method, path, 429, who, False)
            retry = {"Retry-After": str(max(1, int(wait + 0.999)))}
            return sandbox_control.answer(429, {"message": "API rate limit exceeded."}, {**headers, **retry})
        query = dict(urllib.parse.parse_qsl(request.scope.get("query_string", b"").decode("latin-1")))
        status, answer = _dispatch(sandbox, method, route, parts, body, authed, query)
        sandbox.store.log(now, method, path, status, who, True)
        return sandbox_control.answer(status, answer, headers)

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
        return sandbox.authenticate(sandbox_control.parse_json(body))
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
        search, page = sandbox_search.split_path(parts[2:])
        return sandbox.read(urllib.parse.unquote(parts[1]), search, page, query)
    if method in ("POST", "PUT"):
        data = sandbox_control.parse_json(body)
        if data is None:
            return 400, {"success": False, "message": "The body is not JSON."}
        return sandbox.write(urllib.parse.unquote(parts[1]), data, update_only=method == "PUT")
    return 405, {"message": f"{method} is not supported here."}
