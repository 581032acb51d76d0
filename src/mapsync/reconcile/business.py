"""Business checks: one aggregate per group on both sides (each customer's open AR), compared in
exact decimals within the check's tolerance.

A SQL side is ONE query aggregated in the database: `SELECT g1, …, SUM(col) | COUNT(*) FROM t
WHERE (where) GROUP BY g1, …` (the table form; identifiers checked against the catalog and quoted,
`where` is the sheet author's SQL, as a sync's `filter:`), or the author's `query` run as written
(group columns first, the value last). PostgreSQL and MariaDB sum NUMERIC/DECIMAL exactly and
hand back Decimals. SQLite stores NUMERIC as REAL, so its SUM would drift (0.1 + 0.2): there the
table form streams `g1, …, CAST(col AS TEXT)` and sums `Decimal(text)` in Python (a REAL prints
as its shortest text, so `0.1` reads back as `0.1`); a SQLite `query` sums as SQLite does (a note
says so when its value comes back as a float).

An API side (REST, CIMcloud) is aggregated by the caller's `api` function (`ApiAggregate`, in the
runner: `reconcile.api_side.aggregate_api` bound to the connection and the call budget).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors
from mapsync.connectors.sql import SqlDatabase, quoted
from mapsync.reconcile.results import CheckResult, GroupDiff, Read, SideTotals
from mapsync.reconcile.translate import Group, Translator, group_text
from mapsync.redact import redact
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck, Side

D = decimal.Decimal
STREAM = 5000  # rows per fetch when SQLite's values are summed in Python

# (check name, check, side, role "source" | "dest") → that side aggregated
ApiAggregate = Callable[[str, ReconcileCheck, Side, str], SideTotals]
OpenSql = Callable[[str], SqlDatabase]


def aggregate_sql(db: SqlDatabase, side: Side, *, place: str = "reconcile") -> SideTotals:
    """One side on a SQL connection, aggregated by one query (see the module text). `place`
    names the check and side in messages (an unknown table or column is a ConfigError)."""
    read = Read()
    totals: dict[Group, D] = {}
    note: str | None = None
    if side.query is not None:
        stmt: sa.Executable = author_sql(side.query)
        python_sum = False
    else:
        stmt, python_sum = _table_query(db, side, place)
    floats = 0
    try:
        with db.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=STREAM).execute(stmt)
            width = len(side.group)
            for row in result:
                if len(row) != width + 1:
                    raise errors.ConfigError(
                        f"{place}: the query returns {len(row)} column(s): give the {width} group "
                        "column(s) first and the value last"
                    )
                read.rows += 1
                read.bytes += sum(len(str(v)) for v in row if v is not None)
                group = tuple(group_text(v) for v in row[:width])
                value = row[width]
                floats += isinstance(value, float)
                totals[group] = totals.get(group, D(0)) + _decimal(value, place)
    except sa.exc.OperationalError as exc:
        raise db_errors.transient(f"{place}: connection {db.name}", exc, "source") from None
    except sa.exc.DBAPIError as exc:
        raise db_errors.refused(f"{place}: the aggregate query fails", exc) from None
    if floats and not python_sum:
        note = f"{place}: {floats} value(s) came back as floating point numbers (not exact)"
    return SideTotals(totals, read, note=note)


def author_sql(sql: str) -> sa.TextClause:
    """The sheet author's SQL as written: every colon escaped, so a `:word` in it (a literal
    `'10:30'`, a PostgreSQL `::cast`) is SQL, not a bind parameter SQLAlchemy would ask a value
    for (the escape SQLAlchemy documents for `text()`)."""
    return sa.text(sql.replace(":", "\\:"))


def _table_query(db: SqlDatabase, side: Side, place: str) -> tuple[sa.Executable, bool]:
    """The table form's query, and whether its rows are summed in Python (SQLite's `sum`)."""
    assert side.table is not None
    table = db.table(side.table, place)
    cols = [_column(table, name, place, "group") for name in side.group]
    cond = [author_sql(f"({side.where})")] if isinstance(side.where, str) else []
    if side.count:
        return sa.select(*cols, sa.func.count()).select_from(table).where(*cond).group_by(*cols), False
    assert side.sum is not None
    value = _column(table, side.sum, place, "sum")
    if db.dialect == "sqlite":
        # SQLite's NUMERIC is REAL: stream each value's text and sum it exactly in Python
        return sa.select(*cols, sa.cast(value, sa.Text)).select_from(table).where(*cond), True
    return sa.select(*cols, sa.func.sum(value)).select_from(table).where(*cond).group_by(*cols), False


def _column(table: sa.Table, name: str, place: str, what: str) -> sa.ColumnElement[Any]:
    if name not in table.c:
        known = ", ".join(sorted(table.c.keys())[:20])
        raise errors.ConfigError(f"{place}: {what} column {name!r} is not in table {table.name} ({known})")
    col: sa.ColumnElement[Any] = table.c[quoted(name)]
    return col


def _decimal(value: Any, place: str) -> D:
    """An aggregate or a summed value as an exact Decimal (a float by its shortest text; NULL: 0,
    as SQL's SUM over NULLs only means nothing to sum)."""
    if value is None:
        return D(0)
    if isinstance(value, bool):
        return D(int(value))
    if isinstance(value, (int, D)):
        return D(value)
    try:
        return D(str(value).strip())
    except decimal.InvalidOperation:
        raise errors.ConfigError(f"{place}: value {str(value)[:40]!r} is not a number") from None


def compare(
    name: str, check: ReconcileCheck, source: SideTotals, dest: SideTotals, translator: Translator
) -> CheckResult:
    """The two sides compared group by group: the source's groups translated, values within
    `check.tolerance` (none: equal) match; a group on one side only is compared with 0 under
    `missing: zero` (reported when that differs) and always reported under `missing: differ`.
    A side that is not whole (an API side stopped at `max_calls`) compares nothing: an error."""
    result = CheckResult(check=name, kind="business", sync=check.sync)
    result.read = {"source": source.read, "dest": dest.read}
    result.calls = source.calls + dest.calls
    result.notes = [n for n in (source.note, dest.note) if n]
    incomplete = [role for role, side in (("source", source), ("dest", dest)) if not side.complete]
    if incomplete:
        result.error = f"{' and '.join(incomplete)} side incomplete: groups not compared"
        return result
    translated: dict[Group, D] = {}
    for group, value in source.values.items():
        dest_group = translator(_clean(group))
        translated[dest_group] = translated.get(dest_group, D(0)) + value
    result.notes.extend(translator.notes())
    there = {_clean(g): v for g, v in dest.values.items()}
    zero = D(0)
    for group in sorted(translated.keys() | there.keys()):
        a, b = translated.get(group), there.get(group)
        result.compared += 1
        if a is not None and b is not None:
            if _match(check, a, b):
                result.matched += 1
            else:
                result.mismatched.append(GroupDiff(group, a, b))
        elif check.missing == "zero" and _match(
            check, a if a is not None else zero, b if b is not None else zero
        ):
            result.matched += 1
        elif a is None:
            result.missing_source.append(GroupDiff(group, None, b))
        else:
            result.missing_dest.append(GroupDiff(group, a, None))
    return result


def _clean(group: Iterable[str]) -> Group:
    """A group as compared: its texts without trailing spaces (an API side's too)."""
    return tuple(v.rstrip(" ") for v in group)


def _match(check: ReconcileCheck, a: D, b: D) -> bool:
    return a == b if check.tolerance is None else check.tolerance.matches(a, b)


def run_business(
    name: str,
    check: ReconcileCheck,
    sheet: models.Sheet,
    open_sql: OpenSql,
    api: ApiAggregate | None = None,
    secrets: Iterable[str] = (),
) -> CheckResult:
    """Run one business check: both sides aggregated (SQL by `open_sql(connection)`, API sides by
    `api`), then compared. A check that cannot run gives a result with `error` (redacted, one
    line) instead of raising."""
    try:
        translator = Translator.for_check(sheet, check, name)
        assert check.source is not None and check.dest is not None
        sides = [
            _side(name, check, sheet, side, role, open_sql, api)
            for role, side in (("source", check.source), ("dest", check.dest))
        ]
        return compare(name, check, sides[0], sides[1], translator)
    except errors.MapsyncError as exc:
        return _failed(name, check, str(exc), secrets)
    except sa.exc.SQLAlchemyError as exc:
        return _failed(name, check, db_errors.describe_error(exc, secrets), secrets)


def _side(
    name: str,
    check: ReconcileCheck,
    sheet: models.Sheet,
    side: Side,
    role: str,
    open_sql: OpenSql,
    api: ApiAggregate | None,
) -> SideTotals:
    conn = sheet.connections.get(side.connection)
    if conn is None:
        raise errors.ConfigError(f"check {name}: {role}: unknown connection {side.connection!r}")
    if conn.kind == "sql":
        return aggregate_sql(open_sql(side.connection), side, place=f"check {name}: {role}")
    if api is None:
        raise errors.ConfigError(f"check {name}: {role}: {conn.kind} sides are not available here")
    return api(name, check, side, role)


def _failed(name: str, check: ReconcileCheck, message: str, secrets: Iterable[str]) -> CheckResult:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    return CheckResult(check=name, kind="business", sync=check.sync, error=redact(first, secrets, 500))
