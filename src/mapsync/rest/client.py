"""One HTTP client per REST connection: keep-alive, authentication, call budget, retries.

Every request first takes one call from the credential's budget (`Budget.acquire`), then goes
out; when its answer is in (or it failed) the call is settled (`Budget.settle`: it counts until
then), and the server's rate-limit headers are handed back (`Budget.observe`). 429, 5xx, connection
errors and timeouts are retried with exponential backoff and jitter; a `Retry-After` (seconds or
HTTP date) is honoured, no request leaves before it. A timeout after the request was sent is an
*ambiguous* outcome: it is retried like the others (writes here are idempotent upserts by key),
and if the tries run out the run stops with a TransientError: it never becomes a record error.
401 renews a token once; 401/403 after that stop the run. Other 4xx come back to the caller,
which turns them into record errors carrying the server's message (redacted, capped).
Redirects are never followed (the credentials would go along): any 3xx stops the run with its
`Location`. A certificate that fails verification stops it at once, saying why.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from mapsync import errors
from mapsync import redact as redact_mod
from mapsync.rest import transports
from mapsync.rest.auth import Auth
from mapsync.rest.auth import StaticAuth as StaticAuth  # re-exported: callers import it from here
from mapsync.rest.auth import TokenAuth as TokenAuth
from mapsync.rest.budget import Budget  # the call budget, shared through the state store
from mapsync.sheet.connection_models import RetryPolicy, parse_limit

log = logging.getLogger("mapsync.rest")
MESSAGE_CAP = 300
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 900.0  # a longer Retry-After stops the run (cursor kept) instead of sleeping


def redact(text: str, secrets: tuple[str, ...], cap: int = MESSAGE_CAP) -> str:
    """Text safe to show: every form of every secret replaced by `***`, cut to `cap` characters."""
    return redact_mod.redact(text, secrets, cap)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Budget(Protocol):
    def acquire(self) -> int: ...

    def settle(self, call: int) -> None: ...

    def observe(self, status: int, headers: Mapping[str, str]) -> None: ...


class NoBudget:
    """Stand-in when no limits are configured (or the budget module is not there)."""

    def acquire(self) -> int:
        return 0

    def settle(self, call: int) -> None:
        return None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None


def make_budget(store: Any, credential: str, limits: list[str]) -> _Budget:
    """The shared call budget of a credential (`mapsync.rest.budget`), or a no-op."""
    if not limits:
        return NoBudget()
    budget: _Budget = Budget(store, credential, [parse_limit(x) for x in limits])
    return budget


class HttpClient:
    """Requests to one API through one keep-alive httpx.Client."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: dt.timedelta,
        retry: RetryPolicy,
        max_concurrency: int = 4,
        auth: Auth | None = None,
        budget: _Budget | None = None,
        headers: dict[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/") + "/"
        self.retry = retry
        self.auth = auth
        self.budget: _Budget = budget or NoBudget()
        self.secrets = (*secrets, *(auth.secrets if auth is not None else ()))
        self.sleep: Callable[[float], None] = time.sleep
        self.calls = 0  # requests sent (retries included), for tests and benchmarks
        self.last_headers: dict[str, str] = {}
        self.configured_headers = tuple(headers or {})
        self._gate = threading.BoundedSemaphore(max_concurrency)
        seconds = timeout.total_seconds()
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
            headers={"Accept": "application/json", **(headers or {})},
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
            mounts=transports.mounted() if transport is None else None,
        )

    def close(self) -> None:
        self.http.close()

    def shown(self, text: str) -> str:
        return redact(text, self.secrets)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        authenticate: bool = True,
        headers: Mapping[str, str] | None = None,
        bare: bool = False,
        once: bool = False,
    ) -> httpx.Response:
        """Send with retries (`bare`: without the connection's configured headers, for another
        host that must not see them). Returns a 2xx response or a 4xx the caller should judge; raises
        TransientError when the tries run out, PermanentError when access is refused.

        `once`: a request whose effect must not happen twice (a destructive GET): a lost answer,
        a timeout or a 5xx is never sent again; only an answer that says the server did not run
        it (401 with a renewable token, 429 with the budget spent) is."""
        policy = self.retry
        delay = policy.backoff.total_seconds()
        cap = policy.max_backoff.total_seconds()
        renewed = False
        problem = ""
        tries = 1 if once else policy.attempts
        attempt = 0
        while attempt < tries:
            attempt += 1
            outgoing = {
                **(headers or {}),
                **(self.auth.headers(self) if (authenticate and self.auth) else {}),
            }
            wait: float | None = None
            try:
                resp = self._send(method, path, json, params, outgoing, bare=bare)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
                problem = f"{'no answer (ambiguous: may have been applied)' if sent else 'cannot connect'}: "
                tls = tls_failure(exc)
                if tls:  # a certificate does not fix itself between tries
                    raise errors.TransientError(
                        f"connection {self.name}: {method} {path}: {problem}{tls}"
                    ) from None
                problem += self.shown(transport_reason(exc))
                if once and not sent and attempt == tries and tries < policy.attempts:
                    tries += 1  # it never reached the server: sending it is no repeat
                log.warning(
                    "http_retry",
                    extra={"action": "http_retry", "connection": self.name, "error": problem, "try": attempt},
                )
            else:
                status = resp.status_code
                if 300 <= status < 400:
                    where = self.shown(resp.headers.get("Location") or "(no Location)")
                    raise errors.PermanentError(
                        f"connection {self.name}: {method} {path}: the server redirects (HTTP {status}) "
                        f"to {where}; mapsync never follows a redirect (the credentials would go "
                        "along): point `base_url` at the final address"
                    )
                if status < 400:
                    return resp
                if status == 401 and authenticate and self.auth and not renewed and self.auth.invalidate():
                    renewed = True
                    tries += 1 if once else 0  # refused before it ran: sent again with a new token
                    continue
                if status in (401, 403, 407):
                    raise errors.PermanentError(
                        f"connection {self.name}: {method} {path}: access refused (HTTP {status}): "
                        f"{self.shown(resp.text)}",
                        reason=errors.REASON_AUTH,
                    )
                if status not in RETRY_STATUS:
                    return resp
                problem = f"HTTP {status}: {self.shown(resp.text)}"
                wait = retry_after(resp.headers.get("Retry-After"))
                if once and status == 429 and attempt == tries and tries < policy.attempts:
                    tries += 1  # the budget refused it before it ran: waiting and sending again is safe
                log.warning(
                    "http_retry",
                    extra={"action": "http_retry", "connection": self.name, "error": problem, "try": attempt},
                )
            if attempt >= tries:
                break
            if wait is None:
                wait = min(cap, delay) * random.uniform(0.5, 1.0)
                delay *= 2
            elif wait > MAX_RETRY_AFTER:
                raise errors.TransientError(
                    f"connection {self.name}: {method} {path}: the server asks to wait {wait:.0f}s: "
                    f"{problem}",
                    reason=errors.REASON_BUDGET,
                )
            self.sleep(wait)
        if once:
            raise errors.TransientError(
                f"connection {self.name}: {method} {path}: {problem} (not sent again: the request "
                "may have run on the server)",
                reason=errors.REASON_BUDGET if problem.startswith("HTTP 429") else None,
            )
        raise errors.TransientError(
            f"connection {self.name}: {method} {path} failed after {policy.attempts} tries: {problem}",
            reason=errors.REASON_BUDGET if problem.startswith("HTTP 429") else None,
        )

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
        *,
        bare: bool = False,
    ) -> httpx.Response:
        call = self.budget.acquire()
        try:
            with self._gate:
                self.calls += 1
                content = None if body is None else json.dumps(body, default=str).encode()
                if content is not None:
                    headers = {**headers, "Content-Type": "application/json"}
                request = self.http.build_request(
                    method, path, content=content, params=params, headers=headers
                )
                if bare:
                    for name in self.configured_headers:
                        request.headers.pop(name, None)
                resp = self.http.send(request)
        finally:
            # the server counted the call somewhere up to now (a failed send may have arrived too)
            self.budget.settle(call)
        self.last_headers = dict(resp.headers)
        self.budget.observe(resp.status_code, resp.headers)
        return resp


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def tls_failure(exc: httpx.TransportError) -> str | None:
    """Why a certificate was refused (`certificate verify failed: self-signed certificate
    (host api.example.com)`), or None when the failure is not one."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            why = e.verify_message or e.reason or str(e)
            try:
                host = exc.request.url.host
            except RuntimeError:  # no request attached
                host = "?"
            return f"TLS certificate verify failed: {why} (host {host})"
    return None


def transport_reason(exc: httpx.TransportError) -> str:
    """`ConnectError: [Errno 111] Connection refused`: the class and the first line of why."""
    detail = next((str(e) for e in _chain(exc) if str(e)), "")
    detail = detail.splitlines()[0] if detail else ""
    return f"{type(exc).__name__}: {detail}"[:200] if detail else type(exc).__name__


def json_body(resp: httpx.Response) -> Any:
    """The response's JSON, or `None` when the body is not JSON (a malformed answer)."""
    try:
        return resp.json()
    except (ValueError, json.JSONDecodeError):
        return None
