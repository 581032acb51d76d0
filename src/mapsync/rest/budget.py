"""The call budget: how many calls a credential may make, shared by every sync, process and worker.

Limits are sliding windows (`2/1s`, `100/15m`: at most N calls in *any* span of that length; a
fixed window would let 2N through around its boundary). Each call is one row in the state store
(`mapsync_budget_calls`, keyed by a hash of the credential's identity, never the secret), and
`acquire` decides under a lock on the credential's row in `mapsync_budgets` (a row lock on
PostgreSQL, the database write lock on SQLite), so two processes together stay within the limit.
Without a store the budget is shared by the Budgets of one process only.

When a call is counted: the limit is a promise to the API, which counts a request when it
*arrives*, somewhere between the moment `acquire` let it go and the moment its answer came back
(the process may be descheduled, wait for a connection slot, set one up). So a call occupies the
window from its grant until its answer: `acquire` records it at the grant and returns its id, and
`settle(call)`, called when the answer (or a transport error or timeout: the request may have
arrived) is in, moves it to that moment; later waits count from there. A call still in flight
counts from its grant; one whose request takes longer than a whole window to arrive can still
land in the next window (not seen with real APIs; the HTTP client's timeouts bound it).

The server can tighten it: `observe` reads `Retry-After` (seconds or HTTP-date), `429`, and the
`X-RateLimit-*` / `RateLimit-*` headers, and every Budget of that credential waits accordingly.
Clocks: call times are the local wall clock, so processes sharing a budget should share a host
(or NTP-synchronised clocks; `margin` absorbs small skew and network jitter).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mapsync import errors
from mapsync.sheet.duration import format_duration, parse_duration
from mapsync.state.budget import BudgetRow, Recent

if TYPE_CHECKING:
    from mapsync.state.ports import Budget as BudgetStore

Limit = tuple[int, dt.timedelta]
_US = 1_000_000
_LIMIT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(.+?)\s*$")


def parse_limit(text: str) -> Limit:
    """`"2/1s"` → (2, 1 s); `"100/15m"`, `"2/s"` (a bare unit means one of it) likewise."""
    match = _LIMIT.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a call limit (write e.g. 2/1s or 100/15m)")
    count, span = int(match.group(1)), match.group(2)
    if span[:1].isalpha():
        span = "1" + span
    window = parse_duration(span)
    if count <= 0 or window.total_seconds() <= 0:
        raise ValueError(f"{text!r}: a call limit needs a positive count and window")
    return count, window


def parse_limits(value: str | Sequence[str]) -> list[Limit]:
    """Several limits, as a list or one comma-separated text: `"2/1s, 100/15m"`."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [parse_limit(p) for p in parts if str(p).strip()]


def format_limit(limit: Limit) -> str:
    return f"{limit[0]}/{format_duration(limit[1])}"


def credential_id(identity: str) -> str:
    """The name a budget is kept under: a hash, so the identity (or a secret in it) is not stored."""
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value: delay-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, moment.timestamp() - now)


class _Shared:
    """In-process state of one credential (used when there is no store)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[int, int] = {}  # call id → µs (its grant, then its answer)
        self.ids = itertools.count(1)
        self.blocked_until: int | None = None
        self.server_remaining: int | None = None
        self.server_reset: int | None = None


_LOCAL: dict[str, _Shared] = {}
_LOCAL_LOCK = threading.Lock()


class Budget:
    """Blocks callers so that every limit holds for one credential."""

    def __init__(
        self,
        store: BudgetStore | None,
        credential: str,
        limits: list[tuple[int, dt.timedelta]],
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for count, window in limits:
            if count <= 0 or window.total_seconds() <= 0:
                raise errors.ConfigError(f"call limit {count}/{window} needs a positive count and window")
        self.store = store
        self.key = credential_id(credential)
        self.limits = sorted(((n, int(w.total_seconds() * _US)) for n, w in limits), key=lambda x: x[1])
        self.margin = int(margin * _US)
        self.clock = clock
        self.sleep = sleep
        self._row_ready = False
        self._lock = threading.Lock()
        with _LOCAL_LOCK:
            self._local = _LOCAL.setdefault(self.key, _Shared())

    def with_store(self, store: BudgetStore | None) -> Budget:
        """The same credential and limits kept in `store` (`mapsync check` reads the shared one)."""
        twin = Budget(None, "", [], margin=self.margin / _US, clock=self.clock, sleep=self.sleep)
        twin.store, twin.key, twin.limits = store, self.key, list(self.limits)
        with _LOCAL_LOCK:
            twin._local = _LOCAL.setdefault(self.key, _Shared())
        return twin

    @property
    def longest(self) -> int:
        return max((w for _, w in self.limits), default=0)

    def _now(self) -> int:
        return int(self.clock() * _US)

    # ----------------------------------------------------------------- acquire

    def acquire(self) -> int:
        """Wait until one more call is allowed under every limit, then record it (at this moment).
        Returns the call's id: hand it to `settle` when the call's answer is in."""
        while True:
            wait, call = self._try_store() if self.store is not None else self._try_local()
            if wait <= 0:
                return call
            self.sleep(min(wait / _US, 5.0))  # re-check: the server may have said more meanwhile

    def settle(self, call: int) -> None:
        """The answer to `call` (an id from `acquire`) is in, or its request failed: the server
        counted it at some moment up to now, so from now on it is counted now (a call whose
        record was pruned meanwhile is recorded again)."""
        if self.store is None:
            shared = self._local
            with shared.lock:
                now = self._now()
                shared.calls[call] = max(now, shared.calls.get(call, now))
            return
        try:
            self._ensure_row()
            self.store.budget_settle(self.key, call, self._now)
        except sa.exc.SQLAlchemyError as exc:  # the store's own error (any kind), named by class only
            raise errors.TransientError(
                f"call budget: state store failed: {type(exc).__name__}", failure_class="tool"
            ) from None

    def _wait_for(
        self,
        now: int,
        recent: Callable[[int, int], list[int]],
        blocked_until: int | None,
        remaining: int | None,
        reset: int | None,
    ) -> int:
        """Microseconds until a call is allowed (≤ 0: now). `recent(n, window)` returns the call
        times inside the window, newest first, at most n of them."""
        wait = (blocked_until or 0) - now
        if remaining is not None and remaining <= 0 and reset is not None and reset > now:
            wait = max(wait, reset - now)
        for count, window in self.limits:
            times = recent(count, window)
            if len(times) >= count:
                # the count-th newest call must leave the window first
                wait = max(wait, times[count - 1] + window + self.margin - now)
        return wait

    def _try_local(self) -> tuple[int, int]:
        shared = self._local
        with shared.lock:
            now = self._now()
            oldest = now - self.longest - self.margin
            shared.calls = {c: t for c, t in shared.calls.items() if t > oldest}

            def recent(count: int, window: int) -> list[int]:
                times = (t for t in shared.calls.values() if t > now - window - self.margin)
                return sorted(times, reverse=True)[:count]

            wait = self._wait_for(
                now, recent, shared.blocked_until, shared.server_remaining, shared.server_reset
            )
            if wait > 0:
                return wait, 0
            call = next(shared.ids)
            shared.calls[call] = now
            if shared.server_remaining is not None:
                shared.server_remaining -= 1
            return 0, call

    def _ensure_row(self) -> None:
        if self._row_ready:
            return
        assert self.store is not None
        self.store.budget_ensure(self.key)
        self._row_ready = True

    def _try_store(self) -> tuple[int, int]:
        assert self.store is not None
        store = self.store

        def decide(now: int, row: BudgetRow, recent: Recent) -> int:
            return self._wait_for(
                now,
                lambda count, window: recent(count, now - window - self.margin),
                row.blocked_until_us,
                row.server_remaining,
                row.server_reset_us,
            )

        try:
            self._ensure_row()
            with self._lock:
                return store.budget_take(self.key, self._now, decide, self.longest + self.margin)
        except sa.exc.SQLAlchemyError as exc:  # the store's own error (any kind), named by class only
            raise errors.TransientError(
                f"call budget: state store failed: {type(exc).__name__}", failure_class="tool"
            ) from None

    # ----------------------------------------------------------------- observe

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Tighten the budget from a response: Retry-After, 429, X-RateLimit-*/RateLimit-*."""
        h = {str(k).lower(): str(v) for k, v in headers.items()}
        now_s = self.clock()
        now = int(now_s * _US)
        blocked: int | None = None
        after = parse_retry_after(h.get("retry-after"), now_s)
        if after is not None:
            blocked = now + int(after * _US)
        remaining, reset = _rate_headers(h, now_s)
        reset_at = now + int(reset * _US) if reset is not None else None
        if status == 429 and blocked is None:
            shortest = self.limits[0][1] if self.limits else _US
            blocked = reset_at if reset_at is not None else now + shortest
        if remaining is not None and reset_at is None:
            reset_at = now + (self.limits[0][1] if self.limits else _US)
        if blocked is None and remaining is None:
            return
        if self.store is None:
            shared = self._local
            with shared.lock:
                if blocked is not None:
                    shared.blocked_until = max(shared.blocked_until or 0, blocked)
                if remaining is not None:
                    shared.server_remaining, shared.server_reset = remaining, reset_at
            return
        try:
            self._ensure_row()
            self.store.budget_tighten(
                self.key, blocked, (remaining, reset_at) if remaining is not None else None
            )
        except sa.exc.SQLAlchemyError as exc:  # the store's own error (any kind), named by class only
            raise errors.TransientError(
                f"call budget: state store failed: {type(exc).__name__}", failure_class="tool"
            ) from None

    # ----------------------------------------------------------------- report

    def remaining(self) -> dict[str, Any]:
        """What is left right now, per limit, and what the server said (for `mapsync check`)."""
        now = self._now()
        if self.store is None:
            with self._local.lock:
                times = sorted(self._local.calls.values())
                blocked, server, reset = (
                    self._local.blocked_until,
                    self._local.server_remaining,
                    self._local.server_reset,
                )
        else:
            times, row = self.store.budget_read(self.key, now - self.longest - self.margin)
            row = row or BudgetRow()
            blocked, server, reset = row.blocked_until_us, row.server_remaining, row.server_reset_us
        limits = []
        for count, window in self.limits:
            inside = [t for t in times if t > now - window]
            limits.append(
                {
                    "limit": format_limit((count, dt.timedelta(microseconds=window))),
                    "used": len(inside),
                    "remaining": max(0, count - len(inside)),
                    "resets_in": round(max(0, (inside[0] + window - now) / _US), 3) if inside else 0.0,
                }
            )
        live = reset is not None and reset > now
        return {
            "credential": self.key[:12],
            "limits": limits,
            "blocked_for": round(max(0, (blocked or 0) - now) / _US, 3),
            "server_remaining": server if live else None,
            "server_reset_in": round((reset - now) / _US, 3) if live and reset is not None else None,
        }


def _rate_headers(h: dict[str, str], now: float) -> tuple[int | None, float | None]:
    """(remaining, seconds until reset) from X-RateLimit-* / RateLimit-* / structured RateLimit."""
    remaining = _number(h.get("x-ratelimit-remaining") or h.get("ratelimit-remaining"))
    reset = _number(h.get("x-ratelimit-reset") or h.get("ratelimit-reset"))
    combined = h.get("ratelimit")
    if (
        combined and remaining is None
    ):  # draft-ietf-httpapi-ratelimit-headers: limit=100, remaining=5, reset=30
        parts = dict(re.findall(r"(\w+)\s*=\s*([\d.]+)", combined))
        remaining = _number(parts.get("remaining") or parts.get("r"))
        reset = _number(parts.get("reset") or parts.get("t"))
    if reset is not None and reset > 1_000_000_000:  # an epoch time (GitHub style), not a delta
        reset = max(0.0, reset - now)
    return (int(remaining) if remaining is not None else None), reset


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None
