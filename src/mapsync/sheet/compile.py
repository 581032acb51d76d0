"""Compile a sync's field rules, once, into `prepare(batch)` plus a pure `apply(change)`.

The destination's catalog (lengths, NOT NULL, types) is folded in at compile time, so a value
that would break a destination constraint becomes a record error naming the field and the
limit instead of a database exception.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Callable
from collections.abc import Mapping as AbcMapping
from typing import Any

from mapsync import records, transforms
from mapsync.connectors.sql import ColumnInfo
from mapsync.errors import RecordRejected
from mapsync.sheet import models

FieldFn = Callable[[records.Row, transforms.Tally], Any]

_PY_KIND = {
    int: "int",
    decimal.Decimal: "decimal",
    float: "float",
    bool: "bool",
    dt.datetime: "datetime",
    dt.date: "date",
    str: "str",
}


@dataclasses.dataclass(frozen=True)
class Context:
    """What `prepare` fetched for one batch (batched lookups land here)."""

    lookups: AbcMapping[str, Any] = dataclasses.field(default_factory=dict)


def _compile_field(name: str, spec: models.FieldRule, column: ColumnInfo | None) -> FieldFn:
    steps = [s for compile_ in transforms.RULES.values() if (s := compile_(spec, name)) is not None]
    check = constraint_check(name, column)
    source, constant = spec.from_, spec.value
    if not steps and source is not None:  # a plain copy or rename: the most common rule

        def copy(row: records.Row, tally: transforms.Tally) -> Any:
            return check(row.get(source))

        return copy
    if not steps:  # a constant: check it once; one that fails is rejected per record, as before
        try:
            fixed = check(constant)
        except Exception:
            pass
        else:
            return lambda row, tally: fixed

    def fn(row: records.Row, tally: transforms.Tally) -> Any:
        value = row.get(source) if source is not None else constant
        for step in steps:
            value = step(value, tally)
        return check(value)

    return fn


def constraint_check(name: str, column: ColumnInfo | None) -> Callable[[Any], Any]:
    """Coerce to the column's type and check its limits; RecordRejected names field and limit."""
    if column is None:
        return lambda v: v
    kind = _PY_KIND.get(column.python_type) if column.python_type else None
    length, nullable = column.length, column.nullable
    precision, scale = column.precision, column.scale
    no_nul = column.text_nul_forbidden
    # fast paths, same outcome as the full check below: a value of exactly the column's type
    # that has no limits to check, and text for a text (or untyped) column
    exact = {"int": int, "float": float, "bool": bool, "datetime": dt.datetime, "date": dt.date}.get(
        kind or ""
    )
    text = kind in ("str", None)

    def check(value: Any) -> Any:
        if value is None:
            if not nullable:
                raise RecordRejected(
                    f"field `{name}` is NULL but the destination column is NOT NULL", name, "not_null"
                )
            return None
        if type(value) is exact:
            return value
        if (
            text
            and type(value) is str
            and (length is None or len(value) <= length)
            and not (no_nul and "\x00" in value)
        ):
            return value
        if kind and kind != "str" and not _is_kind(value, kind):
            try:
                value = transforms.convert(value, kind)
            except (ValueError, ArithmeticError, TypeError):
                raise RecordRejected(
                    f"field `{name}`: {transforms.show(value)} is not a valid {column.type_name}",
                    name,
                    "type",
                ) from None
        if kind == "str" and not isinstance(value, str):
            value = str(value)
        if isinstance(value, str):
            if length is not None and len(value) > length:
                raise RecordRejected(
                    f"field `{name}` length {len(value)} > {length} (add `truncate: {length}` to cut it)",
                    name,
                    "length",
                )
            if no_nul and "\x00" in value:
                raise RecordRejected(
                    f"field `{name}` holds a NUL byte, which PostgreSQL text cannot store", name, "nul"
                )
        if isinstance(value, decimal.Decimal) and precision is not None:
            _check_decimal(name, value, precision, scale or 0)
        return value

    return check


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "decimal":
        return isinstance(value, decimal.Decimal | int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, float | int | decimal.Decimal) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool) or value in (0, 1)
    if kind == "datetime":
        return isinstance(value, dt.datetime)
    if kind == "date":
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    return True


def _check_decimal(name: str, value: decimal.Decimal, precision: int, scale: int) -> None:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN, Infinity: no numeric(p,s) column holds them
        raise RecordRejected(
            f"field `{name}`: {value} does not fit numeric({precision},{scale})", name, "precision"
        )
    # enough working digits for the quantized value: a huge value is a rejection, not InvalidOperation
    context = decimal.Context(prec=len(value.as_tuple().digits) + abs(exponent) + scale + 1)
    if (
        isinstance(exponent, int)
        and -exponent > scale
        and value != value.quantize(decimal.Decimal(1).scaleb(-scale), context=context)
    ):
        raise RecordRejected(
            f"field `{name}`: {value} has more than {scale} decimals "
            f"(add `cast: decimal, scale: {scale}` to round)",
            name,
            "scale",
        )
    digits = len(value.quantize(decimal.Decimal(1).scaleb(-scale), context=context).as_tuple().digits)
    if digits > precision:
        raise RecordRejected(
            f"field `{name}`: {value} does not fit numeric({precision},{scale})", name, "precision"
        )


class RowMapping:
    """Field rules of one table (a sync or a child table)."""

    def __init__(
        self, fields: dict[str, models.FieldRule], key: models.KeyMap, columns: dict[str, ColumnInfo]
    ) -> None:
        missing = [f for f in [*fields, *key.to] if columns and f not in columns]
        if missing:
            raise KeyError(", ".join(missing))
        self.fields = {name: _compile_field(name, spec, columns.get(name)) for name, spec in fields.items()}
        self.key_checks = [
            (src, constraint_check(dst, columns.get(dst))) for src, dst in zip(key.from_, key.to, strict=True)
        ]
        self.key_to = list(key.to)

    def dest_key(self, row: records.Row) -> records.Key:
        return tuple([check(row[src]) for src, check in self.key_checks])

    def values(self, row: records.Row, tally: transforms.Tally) -> records.Row:
        out = {name: fn(row, tally) for name, fn in self.fields.items()}
        out.update(zip(self.key_to, self.dest_key(row), strict=True))
        return out


class Mapping:
    """A sync's compiled mapping: `prepare(batch)` then pure `apply(change, ctx, tally)`."""

    def __init__(
        self,
        sync: models.SyncConfig,
        columns: dict[str, ColumnInfo],
        child_columns: dict[str, dict[str, ColumnInfo]],
    ) -> None:
        self.main = RowMapping(sync.fields, sync.key, columns)
        self.children = {
            name: (RowMapping(child.fields, child.key, child_columns.get(name, {})), list(child.parent.to))
            for name, child in sync.children.items()
        }
        self.deletes = sync.deletes

    def prepare(self, changes: list[records.Change]) -> Context:
        """Batched lookups for the whole batch happen here (none are configured yet)."""
        return Context()

    def apply(
        self, change: records.Change, ctx: Context, tally: transforms.Tally
    ) -> records.Mapped | records.Rejection | None:
        """Translate one change. None means: nothing to send (a delete under `ignore`)."""
        try:
            if change.op == "delete":
                return self._delete(change)
            values = self.main.values(change.data, tally)
            dest_key = tuple([values[k] for k in self.main.key_to])
            children: dict[str, list[records.Row]] = {}
            for name, (mapping, parent_cols) in self.children.items():
                rows = []
                for child in change.children.get(name, []):
                    mapped = mapping.values(child, tally)
                    mapped.update(zip(parent_cols, dest_key, strict=True))
                    rows.append(mapped)
                children[name] = rows
        except RecordRejected as exc:
            return records.Rejection(change.key, str(exc), exc.field, exc.rule, change.version)
        except Exception as exc:  # a rule that crashes is one bad record, not a failed run
            return records.Rejection(
                change.key,
                f"mapping failed: {type(exc).__name__}: {exc}"[:500],
                None,
                "mapping",
                change.version,
            )
        return records.Mapped(
            "upsert",
            change.key,
            dest_key,
            change.version,
            values,
            children,
            records.content_hash(values, children),
        )

    def _delete(self, change: records.Change) -> records.Mapped | None:
        dest_key = self.main.dest_key(change.data) if change.data else change.key
        outcome = transforms.DELETE_POLICIES[self.deletes.policy](
            self.deletes, dict(zip(self.main.key_to, dest_key, strict=True))
        )
        if outcome is None:
            return None
        op, values = outcome
        return records.Mapped(op, change.key, dest_key, change.version, values, {}, "deleted")  # type: ignore[arg-type]
