"""`mapsync reconcile`: run the sheet's reconciliation checks (business totals, drift), print what
differs, optionally repair it and check again."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mapsync import errors, keys, watch
from mapsync.alerts import sender
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    app,
    err,
    fail,
    handled,
    json_out,
    load_sheet,
    open_store,
    out,
)
from mapsync.engine import Engine
from mapsync.reconcile import backfill as backfills
from mapsync.reconcile import compute, report, runner
from mapsync.reconcile import repair as repairs
from mapsync.reconcile.repair import RepairOutcome
from mapsync.reconcile.results import CheckResult
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore


@app.command()
def reconcile(
    sheet: SheetArg,
    check: Annotated[
        str | None, typer.Option("--check", "-c", help="Only this check (a name under `reconcile:`).")
    ] = None,
    sync: Annotated[
        str | None,
        typer.Option(
            "--sync",
            "-s",
            help="The checks of this sync: business checks naming it and its drift check (run even when "
            "the sheet declares none, as `drift:SYNC`).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Re-send what differs (re-read at the source, past the ledger's unchanged check; "
            "extras deleted only when mapsync delivered them or the sync `owns_table`, through the "
            "delete policy and the mass-delete guard), then check again.",
        ),
    ] = False,
    force_deletes: Annotated[
        bool,
        typer.Option(
            "--force-deletes",
            help="With --repair: let the repair past the mass-delete guard (its deletes above "
            "`deletes.max_delete_ratio`).",
        ),
    ] = False,
    max_keys: Annotated[
        int,
        typer.Option(
            "--max-keys",
            min=0,
            help="With --repair: refuse a repair of more keys than this before it reads or writes "
            "anything (so many differences usually mean the destination's definition changed); 0: no cap.",
        ),
    ] = repairs.MAX_KEYS,
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="With --sync: first store the drift digest of ledger entries delivered before it "
            "existed (the source read once; entries whose data changed since get theirs on delivery).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare source and destination: business checks (an aggregate per group on both sides,
    e.g. each customer's open AR, within the check's tolerance) and drift checks (the rows a
    sync owns in its destination against what mapsync delivered, from the key ledger).

    Runs every check of the sheet, or `--check NAME`, or the checks of `--sync NAME`. Each check
    is a run of kind `reconcile` (`mapsync runs`), one process at a time; its result is kept in the
    state store and the monitor `reconcile_mismatch` alerts while it differs. A check reading an
    API says first how many calls it will take. Exit 0 when everything matches, 1 when something
    differs (or a check is running elsewhere), 2 when a check could not run or the sheet is wrong.
    """
    loaded = load_sheet(sheet)
    if force_deletes and not repair:
        raise fail("--force-deletes goes with --repair", 2)
    if max_keys != repairs.MAX_KEYS and not repair:
        raise fail("--max-keys goes with --repair", 2)
    if backfill and sync is None:
        raise fail("--backfill goes with --sync NAME (the sync whose ledger gets its drift digests)", 2)
    with handled(loaded.secrets):
        names = runner.checks_for(loaded.sheet, check, sync)
    if not names and sync is not None:
        raise fail(
            f"sync {sync} has no checks: no business check names it, and it writes to "
            f"{loaded.sheet.syncs[sync].to.connection}, not a SQL connection (no drift check)",
            2,
        )
    if not names:
        raise fail("the sheet has no `reconcile:` checks (name a sync with --sync for its drift check)", 2)
    store = open_store(loaded, create=False)
    engine = Engine(loaded, store)
    code, shown = 0, []
    try:
        if backfill and sync is not None:
            with handled(loaded.secrets):
                n = backfills.backfill(engine, sync)
            err.print(f"sync {sync}: drift digest stored for {n} ledger entries", highlight=False)
        for name in names:
            found, exit_code = _one(
                loaded, engine, store, name, repair, as_json, force_deletes, max_keys or None
            )
            code = max(code, exit_code)
            if found is not None:
                shown.append(found)
        _watch(loaded, store)
    finally:
        engine.close()
        store.close()
    if as_json:
        json_out(shown)
    if code:
        raise fail("checks found differences" if code == 1 else "a check could not run", code)


def _one(
    loaded: LoadedSheet,
    engine: Engine,
    store: StateStore,
    name: str,
    repair: bool,
    as_json: bool,
    force_deletes: bool = False,
    max_keys: int | None = repairs.MAX_KEYS,
) -> tuple[dict[str, Any] | None, int]:
    """Run (and repair) one check, print it; its JSON and exit code."""
    try:
        with handled(loaded.secrets):
            check = runner.check_of(loaded.sheet, name)
            if not as_json:
                for line in compute.estimates(loaded.sheet, store, name, check):
                    err.print(line, markup=False, highlight=False)
            result = runner.run_check(engine, name)
    except Exit as exc:  # `handled` said why (a check running elsewhere: 1, a mistake: 2)
        return None, exc.code
    fixed, busy = None, None
    if repair:
        try:
            with handled(loaded.secrets):
                try:
                    fixed = runner.repair_check(
                        engine, name, result, force_deletes=force_deletes, max_keys=max_keys
                    )
                except errors.LeaseHeld as exc:  # the sync runs: the check's result still stands
                    busy = redact(str(exc), loaded.secrets)
        except Exit as exc:  # the repair failed (said why): the check before is still shown
            return _shown(loaded, result, None, as_json), max(exc.code, _code(result))
    if busy is not None:
        err.print(f"repair not run: {busy}", markup=False, highlight=False)
        data = _shown(loaded, result, None, as_json)
        data["repair"] = {"before": None, "outcome": None, "not_run": busy}
        return data, max(1, _code(result))
    return _shown(loaded, result, fixed, as_json), _code(fixed.final if fixed is not None else result)


def _code(final: CheckResult) -> int:
    """A check's exit code: 2 it could not run, 1 it differs (or is incomplete), 0 clean."""
    return 2 if final.error is not None else 0 if final.ok else 1


def _shown(
    loaded: LoadedSheet, result: CheckResult, fixed: runner.Repaired | None, as_json: bool
) -> dict[str, Any]:
    """Print a check's result (and its repair's before, outcome, after); its JSON."""
    final = fixed.final if fixed is not None else result
    columns = keys.columns_of(loaded.sheet, final.sync) if final.sync else []
    data = final.to_json()
    if fixed is not None and fixed.after is not None:
        data["repair"] = {"before": fixed.before.to_json(), "outcome": outcome_dict(fixed.outcome)}
    if not as_json:
        if fixed is not None and fixed.after is not None:
            report.print_result(out, fixed.before, title="before the repair", columns=columns)
            _print_outcome(fixed.outcome)
        report.print_result(
            out, final, title="after the repair" if fixed is not None and fixed.after else None
        )
    return data


def _watch(loaded: LoadedSheet, store: StateStore) -> None:
    """The monitor `reconcile_mismatch` at once (an incident opened or resolved by what the checks
    found), then the alerts due; a failure is logged, never the command's outcome."""
    try:
        found = watch.evaluate(loaded, store, [], only=("reconcile_mismatch",), quiet=True)
        if found.changed:
            sender.flush(loaded, store)
    except Exception as exc:  # the outbox keeps the notices; the daemon or a later command sends them
        err.print(
            f"alerts not evaluated: {redact(type(exc).__name__ + ': ' + str(exc), loaded.secrets)}",
            markup=False,
        )


def outcome_dict(outcome: RepairOutcome | None) -> dict[str, Any] | None:
    """What a repair did, for `--json`."""
    if outcome is None:
        return None
    r = outcome.report
    return {
        "run_id": r.run_id if r is not None else None,
        "status": r.status if r is not None else None,
        "message": r.message if r is not None else None,
        "keys": len(outcome.keys),
        "sent": outcome.sent,
        "deleted": outcome.deletes,
        "not_ours": [[str(v) for v in key] for key in outcome.not_ours],
        "notes": list(outcome.notes),
    }


def _print_outcome(outcome: RepairOutcome | None) -> None:
    if outcome is None:
        return
    r = outcome.report
    run = f"repair run #{r.run_id}: {r.status} — " if r is not None else "repair: no run — "
    left = f", {len(outcome.not_ours)} extra row(s) not ours left" if outcome.not_ours else ""
    out.print(
        f"  {run}{len(outcome.keys)} key(s), sent {outcome.sent}, deleted {outcome.deletes}{left}",
        markup=False,
        highlight=False,
    )
    if r is not None and r.message:
        out.print(f"  repair failure: {r.message}", markup=False, highlight=False)
    for note in outcome.notes:
        out.print(f"  {note}", markup=False, highlight=False)
