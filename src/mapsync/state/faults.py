"""Failures of the state store itself: one clear line instead of a traceback, and a bounded retry.

`classify` names what happened to a SQLAlchemy/driver error of the store:

- `locked`: another process holds SQLite's write lock past `state.lock_timeout` (or a
  PostgreSQL lock wait gave up);
- `full`: the disk, the quota or SQLite's `max_page_count` is full;
- `readonly`: the file, its folder or the database is read-only;
- `unreachable`: the server cannot be reached (refused, unknown host, not accepting connections);
- `cut`: the connection broke while in use (server restart, `pg_terminate_backend`, network);
- `corrupt`: the file is not a database or is damaged;
- `io` / `cantopen`: a disk I/O error; the file cannot be opened (missing folder, permissions);
- `conflict`: a deadlock or serialization failure; `timeout`: a statement timeout.

`install` turns every such error of the store's engine into a `StoreFault` (a StateError), so
that code using `store.engine` directly gets the same one-line error.

`guarded` wraps a store method (each is one short transaction) so that the transient reasons
(locked, unreachable, cut, conflict, timeout) are retried after 0.25 s, 0.5 s, 1 s and 2 s — the whole
transaction, on a fresh connection — before a `StateError` with the reason, the store (password
hidden) and what to do stops the run.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa

from mapsync import deadline, errors

log = logging.getLogger("mapsync.state")

P = ParamSpec("P")
R = TypeVar("R")

DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # pauses between tries of a transient failure
TRANSIENT = frozenset({"locked", "unreachable", "cut", "conflict", "timeout"})

WHAT: dict[str, str] = {
    "locked": "is locked by another process",
    "full": "is full (disk, quota or size limit)",
    "readonly": "is read-only",
    "unreachable": "cannot be reached",
    "cut": "lost its connection",
    "corrupt": "is unreadable (not a database, or damaged)",
    "io": "had a disk I/O error",
    "cantopen": "cannot be opened (a missing folder, or no permission)",
    "conflict": "refused a transaction (deadlock or serialization conflict)",
    "timeout": "did not answer in time (statement timeout)",
}
TODO: dict[str, str] = {
    "locked": "wait for the other process, or raise `state.lock_timeout`; then run again",
    "full": "free space (or raise the quota), then run again: the last batch is re-sent, nothing is lost",
    "readonly": "make the file, its folder and the database writable for this user, then run again",
    "unreachable": "check that the server runs and the URL in `state.url`; then run again",
    "cut": "check the server and the network; then run again (the last batch is re-sent)",
    "corrupt": "restore the store from a backup, or `mapsync seed` into a new one",
    "conflict": "run again",
    "timeout": "check the server's load and locks; then run again",
    "io": "check the disk and the file system, then run again",
    "cantopen": "check that the folder exists and is accessible to this user",
}

# SQLite primary result codes (`sqlite3.Error.sqlite_errorcode & 0xFF`)
_SQLITE = {
    5: "locked",
    6: "locked",
    8: "readonly",
    10: "io",
    11: "corrupt",
    13: "full",
    14: "cantopen",
    26: "corrupt",
}
_SQLITE_TEXT = (
    ("locked", "locked"),
    ("disk is full", "full"),
    ("readonly database", "readonly"),
    ("not a database", "corrupt"),
    ("malformed", "corrupt"),
    ("disk i/o", "io"),
    ("unable to open", "cantopen"),
)
# PostgreSQL SQLSTATE (exact codes first, then classes)
_SQLSTATE = {
    "53100": "full",
    "25006": "readonly",
    "40001": "conflict",
    "40P01": "conflict",
    "55P03": "locked",
    "57P01": "cut",
    "57P02": "cut",
    "57P03": "unreachable",
    "57014": "timeout",
    "XX001": "corrupt",
    "XX002": "corrupt",
}
_SQLSTATE_CLASS = {"08": "cut", "53": "full", "57": "cut"}
_UNREACHABLE_TEXT = (
    "connection refused",
    "could not connect",
    "connection failed",
    "could not translate host",
    "name or service not known",
    "timeout expired",
    "no route to host",
    "not currently accepting connections",
    "does not exist",
)
_CUT_TEXT = (
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "consuming input",
)


class StoreFault(errors.StateError, sa.exc.SQLAlchemyError):
    """A classified failure of the store; `cause` is the driver's error. Also an SQLAlchemyError,
    so that code which already handled the store's SQLAlchemy errors (the webhook inbox answering
    503, the call budget, `check`) keeps doing so."""

    def __init__(self, message: str, reason: str, cause: BaseException) -> None:
        super().__init__(message, reason=reason)
        self.cause = cause


def classify(exc: BaseException, disconnect: bool = False) -> str | None:
    """The reason of a state store failure, or None when it is not one we know."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig
    text = str(orig).lower()
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE:
            return _SQLITE[code & 0xFF]
        return next((reason for needle, reason in _SQLITE_TEXT if needle in text), None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state:
        if state in _SQLSTATE:
            return _SQLSTATE[state]
        if state[:2] in _SQLSTATE_CLASS:
            return _SQLSTATE_CLASS[state[:2]]
    if exc.connection_invalidated or disconnect or any(n in text for n in _CUT_TEXT):
        return "cut"
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        if any(n in text for n in _UNREACHABLE_TEXT):
            return "unreachable"
        return "cut"
    return None


def where(engine: sa.Engine) -> str:
    """The store for messages: SQLite's file, or the URL with its password hidden."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"state store {url.database}"
    return f"state store {url.render_as_string(hide_password=True)}"


def error(engine: sa.Engine, reason: str, exc: BaseException, tries: int = 1) -> StoreFault:
    """The one-line StateError for a classified failure (the driver's first line included)."""
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()
    first = detail[0][:300] if detail else type(exc).__name__
    tried = f" (tried {tries} times)" if tries > 1 else ""
    return StoreFault(f"{where(engine)} {WHAT[reason]}{tried}: {first}; {TODO[reason]}", reason, exc)


def install(engine: sa.Engine) -> None:
    """Every error of the store's engine that `classify` knows becomes a `StoreFault`, also
    for the modules that use `store.engine` directly (views, inbox, key walks …)."""

    def named(ctx: sa.engine.ExceptionContext) -> None:
        if ctx.is_pre_ping or ctx.sqlalchemy_exception is None:
            return  # the pool's liveness check: it reconnects by itself
        reason = classify(ctx.sqlalchemy_exception, ctx.is_disconnect)
        if reason is not None:
            raise error(engine, reason, ctx.sqlalchemy_exception)

    sa.event.listen(engine, "handle_error", named)


def call(engine: sa.Engine, fn: Callable[[], R], what: str = "") -> R:
    """Run `fn` (one whole transaction), retrying transient store failures; a StateError else."""
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except (StoreFault, sa.exc.DBAPIError) as exc:
            fault = exc.cause if isinstance(exc, StoreFault) else exc
            reason = exc.reason if isinstance(exc, StoreFault) else classify(exc)
            if reason is None:
                raise
            # a store whose connections the lease deadline cut is not tried again in this run
            if reason not in TRANSIENT or tries > len(DELAYS) or deadline.aborted(engine):
                raise error(engine, reason, fault, tries) from None
            log.info(
                "state_retry",
                extra={"action": "state_retry", "reason": reason, "try": tries, "what": what},
            )
            time.sleep(DELAYS[tries - 1])


class _HasEngine(Protocol):
    engine: sa.Engine


S = TypeVar("S", bound=_HasEngine)


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A store method whose failures are retried (transient) or named (`StateError`)."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return call(self.engine, lambda: method(self, *args, **kwargs), method.__name__)

    return wrapper


def set_lock_timeout(engine: sa.Engine, seconds: float) -> None:
    """SQLite: how long a statement waits for another process's write lock (`busy_timeout`).
    Applies to the connections opened from now on (the pool is emptied)."""
    if engine.dialect.name != "sqlite":
        return

    def pragma(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        cur.close()

    sa.event.listen(engine, "connect", pragma)  # after the store's own pragmas: this one wins
    engine.dispose()
