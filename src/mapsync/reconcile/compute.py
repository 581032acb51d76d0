"""What one check computes, by kind: a business check's two aggregates compared
(`reconcile.business`), a drift check's walk of the destination against the key ledger
(`reconcile.drift`), and the call estimate said before an API side starts (`reconcile.api_side`).
The runner (`reconcile/runner.py`) wraps this in the check's lease, run row and stored result."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from mapsync import errors
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.engine import Engine
from mapsync.reconcile import business, drift
from mapsync.reconcile.results import CheckResult
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck, Side
from mapsync.state.ports import Store

API_KINDS = ("rest", "cimcloud")


def compute(engine: Engine, name: str, check: ReconcileCheck) -> CheckResult:
    """The check's result (ConfigError, TransientError … when it cannot run)."""
    if check.drift is not None:
        return drift_check(engine, name, check.drift)
    api = None
    if api_sides(engine.sheet, check):
        api = _api_side().aggregator(engine.loaded, engine.store)  # the syncs' shared call budget
    return business.run_business(name, check, engine.sheet, sql_of(engine), api, engine.loaded.secrets)


def _api_side() -> ModuleType:
    """`reconcile.api_side`, imported on first use: it loads the HTTP client, which only a check
    reading an API needs (`mapsync --help` and the daemon's import load none:
    tests/unit/test_imports.py). The one `mapsync` import inside a function here, for that."""
    from mapsync.reconcile import api_side

    return api_side


def sql_of(engine: Engine) -> Callable[[str], SqlDatabase]:
    """The engine's handle of a SQL connection (opened once, closed with the engine)."""

    def open_sql(name: str) -> SqlDatabase:
        db = engine.database(name)
        if not isinstance(db, SqlDatabase):
            raise errors.ConfigError(f"connection {name}: not a SQL connection")
        return db

    return open_sql


def drift_check(engine: Engine, name: str, sync: str) -> CheckResult:
    """The sync's destination rows against its key ledger (a SQL destination only)."""
    cfg = engine.sheet.syncs[sync]
    conn = engine.sheet.connections[cfg.to.connection]
    if not isinstance(conn, models.SqlConnection):
        raise errors.ConfigError(
            f"check {name}: drift compares a SQL destination with the ledger; sync {sync} writes to "
            f"{cfg.to.connection} ({conn.kind})"
        )
    dest = engine.parts(sync).dest
    if not isinstance(dest, SqlDestination):  # a SQL connection always gives one; said, not assumed
        raise errors.ConfigError(f"check {name}: sync {sync}'s destination is not a SQL table")
    if dest.drift_form is None:  # a key column whose type has no drift text form
        raise errors.ConfigError(
            f"check {name}: sync {sync}'s destination key ({', '.join(cfg.key.to)}) cannot be digested: "
            "no drift check for it"
        )
    return drift.walk(engine.store, sync, dest, dest.drift_form, check=name, deletes=cfg.deletes)


def api_sides(sheet: models.Sheet, check: ReconcileCheck) -> list[tuple[str, Side]]:
    """The sides of a business check read from an API: ("source" | "dest", side)."""
    found = []
    for which, side in (("source", check.source), ("dest", check.dest)):
        if side is not None and sheet.connections[side.connection].kind in API_KINDS:
            found.append((which, side))
    return found


def estimates(sheet: models.Sheet, store: Store, name: str, check: ReconcileCheck) -> list[str]:
    """Before a check with an API side starts: how many calls each such side will take, from the
    rows it read last time (`store.reconciliation.latest`), or at most `max_calls`."""
    sides = api_sides(sheet, check)
    if not sides:
        return []
    api_side = _api_side()
    last: dict[str, Any] = {}
    previous = store.reconciliation.latest([name]).get(name)
    if previous is not None and previous["status"] != "error":
        last = previous["detail"].get("read", {})
    lines = []
    for which, side in sides:
        rows = last.get(which, {}).get("rows")
        _, text = api_side.estimate(check, side, sheet.connections[side.connection], last_rows=rows)
        kind = sheet.connections[side.connection].kind
        budget = "CIMcloud's" if kind == "cimcloud" else f"connection {side.connection}'s"
        lines.append(f"check {name}: {which} side ({side.connection}): {text} of {budget} budget")
    return lines
