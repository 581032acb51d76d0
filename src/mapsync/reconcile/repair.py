"""`mapsync reconcile --repair`: from what a check found to `Engine.repair` (repair_plan.py).

- A **drift** result names its sync: its changed and missing keys are re-sent (read afresh at the
  source; gone there: deleted through the delete policy), its extras are deleted when they are
  mapsync's (the ledger knows them, or the sync `owns_table`), else left as "not ours".
- A **business** result names groups as the destination names them. For each mismatched or
  missing group of the check's `sync`, the group's keys are: the source rows of the sync whose
  group columns hold the group (the destination's group translated back through the sync's
  rule, `translate.Translator.inverse`: a rename or a one-to-one `map`), read with bound
  parameters (SQL sources only), plus the destination rows of the group whose key the ledger
  holds (gone at the source: deleted). Those keys are repaired; nothing else of the sync is
  touched. The notes say what was left: the groups' destination rows the ledger does not hold
  ("left: not mapsync's"), and a group column the sync casts to int from text (`cast: int` is not
  undone: the source rows are looked up by the integer's plain text, `007` is not found).
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.columns import ColumnInfo
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.connectors.sql_source import SqlSource
from mapsync.engine import Engine, RunReport
from mapsync.reconcile.results import CheckResult, Extra
from mapsync.reconcile.translate import NULL_TEXT, Group, Translator
from mapsync.repair_plan import MAX_KEYS as MAX_KEYS
from mapsync.repair_plan import as_type, source_key
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck


@dataclasses.dataclass
class RepairOutcome:
    """What a repair did: its run (None: nothing to repair), the keys it was given, the rows it
    sent and deleted (or disabled), the extras it left as not ours, and what to say."""

    report: RunReport | None
    keys: list[str] = dataclasses.field(default_factory=list)
    sent: int = 0
    deletes: int = 0
    not_ours: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def repair(
    engine: Engine,
    sheet: models.Sheet,
    result: CheckResult,
    *,
    trigger: str = "cli",
    force_deletes: bool = False,
    max_keys: int | None = MAX_KEYS,
) -> RepairOutcome:
    """Repair what `result` found (a run of kind `repair` of the check's sync; `force_deletes`:
    past the mass-delete guard; more than `max_keys` keys (None: no cap) and it is refused)."""
    go = functools.partial(_run, engine, sheet, trigger=trigger, force=force_deletes, max_keys=max_keys)
    if result.error is not None:
        return RepairOutcome(None, notes=[f"check {result.check} did not run: nothing to repair"])
    if result.kind == "drift":
        assert result.sync is not None  # a drift result always names its sync
        return go(result.sync, [*result.changed, *result.missing], result.extra, [])
    check = sheet.reconcile.get(result.check)
    if check is None:
        return RepairOutcome(None, notes=[f"check {result.check} is not in the sheet: nothing to repair"])
    if check.sync is None:
        return RepairOutcome(
            None, notes=[f"check {result.check} names no sync: mapsync cannot tell which records to re-send"]
        )
    groups = [d.group for d in (*result.mismatched, *result.missing_source, *result.missing_dest)]
    if not groups:
        return RepairOutcome(None, notes=[f"check {result.check}: nothing differs, nothing to repair"])
    keys, notes = group_keys(engine, sheet, result.check, check, groups)
    outcome = go(check.sync, keys, [], notes)
    outcome.notes.insert(0, f"check {result.check}: {len(groups)} group(s) to repair, {len(keys)} key(s)")
    return outcome


def _run(
    engine: Engine,
    sheet: models.Sheet,
    sync: str,
    keys: list[str],
    extras: list[Extra],
    notes: list[str],
    *,
    trigger: str,
    force: bool,
    max_keys: int | None,
) -> RepairOutcome:
    cfg = sheet.syncs[sync]
    keys = list(dict.fromkeys(keys))
    not_ours = [] if cfg.owns_table else [e.dest_key for e in extras if e.ledger_key is None]
    if not keys and len(not_ours) == len(extras):
        if not_ours:
            notes.append(f"{len(not_ours)} extra destination row(s) not ours: left")
        return RepairOutcome(None, keys, not_ours=not_ours, notes=notes or ["nothing to repair"])
    report = engine.repair(sync, keys, extras, trigger=trigger, force_deletes=force, max_keys=max_keys)
    deletes = report.counts.deleted + report.gone_at_source.get("disabled", 0)
    sent = report.counts.written - report.gone_at_source.get("disabled", 0)
    return RepairOutcome(report, keys, sent, deletes, not_ours, notes + list(report.notes))


def group_keys(
    engine: Engine, sheet: models.Sheet, name: str, check: ReconcileCheck, groups: Sequence[Group]
) -> tuple[list[str], list[str]]:
    """The ledger key texts of these destination groups' records (see the module's docstring),
    and notes on what could not be looked at."""
    assert check.sync is not None and check.source is not None and check.dest is not None
    cfg = sheet.syncs[check.sync]
    translator = Translator.for_check(sheet, check, name)
    parts = engine.parts(check.sync)
    out: list[str] = []
    notes: list[str] = []
    source = parts.source
    if isinstance(source, SqlSource):
        for group in groups:
            keys = _source_keys(source, check.source.group, translator.inverse(group))
            out.extend(records.key_text(k) for k in keys)
        notes.extend(_cast_notes(source, check.source.group, translator))
    else:
        notes.append(f"sync {check.sync} reads no SQL source: the groups' source rows were not looked up")
    dest = parts.dest
    if isinstance(dest, SqlDestination):
        foreign = 0
        for group in groups:
            dest_keys = _dest_keys(dest, cfg, check.dest.group, group)
            typed = [source_key(source, cfg, k) for k in dest_keys]
            held = engine.store.ledger(check.sync, typed)
            out.extend(records.key_text(k) for k in typed if k in held)
            foreign += sum(1 for k in typed if k not in held)
        if foreign:
            notes.append(
                f"{foreign} destination row(s) of these group(s) are not in sync {check.sync}'s key "
                "ledger: left: not mapsync's (neither repaired nor deleted)"
            )
    else:
        notes.append(
            f"sync {check.sync} writes no SQL table: the groups' destination rows were not looked up"
        )
    return list(dict.fromkeys(out)), notes


def _cast_notes(source: SqlSource, columns: list[str], translator: Translator) -> list[str]:
    """A group column the sync casts to int from text: the destination's group (`7`) finds the
    source rows whose text is `7`, not `007` or ` 7` (the cast is not undone); said, since those
    rows are repaired only where the destination holds them under the ledger."""
    out = []
    for column, rule in zip(columns, translator.rules or [], strict=True):
        info = source.info.get(column)
        if rule.cast_int and (info is None or info.python_type is not int):
            out.append(
                f"group column {column} is cast to int by sync's field {rule.field or rule.dest}: its "
                "source rows are looked up by the integer's plain text, so rows written otherwise "
                "(e.g. '007') were not looked up at the source (those the destination holds under "
                "the ledger are repaired)"
            )
    return out


def _source_keys(source: SqlSource, columns: list[str], group: Group) -> list[records.Key]:
    """The sync's source keys of one group (the sync's filter applies), values bound."""
    where: list[Any] = [sa.text(f"({source.filter})")] if source.filter else []
    where += _equal(source.col, source.info, columns, group)
    query = sa.select(*[source.col(k) for k in source.key]).select_from(source.relation).where(*where)
    with source.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _dest_keys(
    dest: SqlDestination, cfg: models.SyncConfig, columns: list[str], group: Group
) -> list[records.Key]:
    """The destination keys of one group's rows, values bound."""
    table = dest.main.table
    where = _equal(lambda c: table.c[c], dest.main.columns, columns, group)
    query = sa.select(*[table.c[k] for k in cfg.key.to]).where(*where)
    with dest.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _equal(
    col: Callable[[str], sa.ColumnElement[Any]], info: dict[str, ColumnInfo], columns: list[str], group: Group
) -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    for column, text in zip(columns, group, strict=True):
        if text == NULL_TEXT:
            out.append(col(column).is_(None))
            continue
        kind = info[column].python_type if column in info else None
        value = as_type(kind, text)
        if kind is decimal.Decimal and isinstance(value, decimal.Decimal):
            out.append(col(column) == sa.literal(value, sa.Numeric()))
        else:
            out.append(col(column) == value)
    return out
