"""Failures before a run row exists become failed runs, each with its failure class.

A run row is written once the lease is held and the kind decided (`StateStore.start_run`).
Before that the engine connects to both ends and checks the sheet against their catalogs,
takes the lease and reads the cursors; any of these can fail (a dropped table or column, an
unreachable database, a lease held by another run, an unseeded sync). `recorded` wraps
`Engine.run` and `Engine.retry` so that such a failure is written as a `failed` run with its
class (`errors.FailureClass`) and message before the error goes on to the caller as before:
`status`, `runs` and monitors see it instead of the previous run's `success`.

Not recorded: a `seed` refused because the sync is already seeded (`errors.UsageError`), a
lease held elsewhere in follow mode (each poll would add one; follow skips it quietly), and a
failure of the state store itself (it cannot take the record; the message says so).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from mapsync import crash, errors
from mapsync.errors import FailureClass
from mapsync.state.runs import started_run

log = logging.getLogger("mapsync.engine")

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def stage(failure_class: str) -> Iterator[None]:
    """Connection failures raised while opening one end belong to that end (source or
    destination), whatever the connector guessed."""
    try:
        yield
    except (errors.TransientError, errors.PermanentError) as exc:
        exc.failure_class = failure_class
        raise


def failure_class(exc: BaseException) -> str:
    if isinstance(exc, errors.ConfigError):
        return FailureClass.CONFIG
    cls = getattr(exc, "failure_class", None)
    return str(cls) if cls else FailureClass.TOOL


def reason(exc: BaseException) -> str | None:
    """Why the run failed, finer than its class (`errors.REASONS`: guard, auth, budget, breaker,
    deadline), from the error's `reason`; None when it says none of these."""
    why = getattr(exc, "reason", None)
    return why if isinstance(why, str) and why in errors.REASONS else None


def _recordable(exc: BaseException, keep_empty: bool) -> bool:
    if isinstance(exc, errors.UsageError | errors.SlotTaken):  # SlotTaken: another ran the slot
        return False
    if isinstance(exc, errors.LeaseHeld):
        return keep_empty  # follow mode (keep_empty=False) skips a held lease quietly
    if isinstance(exc, errors.StateError):
        return exc.reason is None or exc.reason == "unseeded"  # a failed store cannot record
    return isinstance(exc, Exception)


class _Engine(Protocol):
    store: Any

    def redact_text(self, text: str) -> str: ...


E = TypeVar("E", bound=_Engine)


def recorded(method: Callable[Concatenate[E, P], R]) -> Callable[Concatenate[E, P], R]:
    """Record a failure raised before the run row exists as a failed run, then re-raise it."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(engine: E, /, *args: P.args, **kwargs: P.kwargs) -> R:
        token = started_run.set(None)
        try:
            return method(engine, *args, **kwargs)
        except BaseException as exc:
            call = signature.bind(engine, *args, **kwargs)
            call.apply_defaults()
            options = call.arguments
            # retry and reexport take no `kind`: the method is the kind (as in run_types.counted)
            options.setdefault("kind", method.__name__)
            if (
                started_run.get() is None
                and not crash.dead()
                and _recordable(exc, bool(options.get("keep_empty", True)))
            ):
                _record(engine, options, exc)
            raise
        finally:
            started_run.reset(token)

    return wrapper


def _record(engine: _Engine, options: dict[str, Any], exc: BaseException) -> None:
    fence = getattr(engine, "may_record_slot", None)
    if options.get("slot") is not None and fence is not None and not fence():
        # a daemon woken from a freeze: the slot may be counted by the worker that took over
        log.warning(
            "run_not_recorded",
            extra={"action": "run_not_recorded", "sync": options["name"], "error": str(exc)[:500]},
        )
        return
    cls = failure_class(exc)
    text = str(exc) if isinstance(exc, errors.MapsyncError) else f"{type(exc).__name__}: {exc}"
    message = engine.redact_text(text)
    try:
        run_id = engine.store.record_failed_run(
            options["name"],
            options["kind"],
            options.get("trigger", "cli"),
            cls,
            message,
            options.get("scheduled_at"),
            slot=options.get("slot"),
            coalesced=int(options.get("coalesced") or 0),
            reason=reason(exc),
        )
    except errors.SlotTaken:  # the slot's run was recorded by another attempt: nothing to add
        return
    except errors.StateError as fault:  # the store failed too: the caller still gets `exc`
        log.error("run_not_recorded", extra={"action": "run_not_recorded", "error": str(fault)})
        return
    log.error(
        "run_failed",
        extra={
            "action": "run_failed",
            "sync": options["name"],
            "run_id": run_id,
            "failure_class": cls,
            "error": message,
        },
    )
