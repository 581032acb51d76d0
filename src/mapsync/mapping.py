"""Compile a sync's field rules, once, into `prepare(batch)` plus a pure `apply(change)`.

The destination's catalog (lengths, NOT NULL, types) is folded in at compile time, so a value
that would break a destination constraint becomes a record error naming the field and the
limit instead of a database exception.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Callable, Iterator
from collections.abc import Mapping as AbcMapping
from pathlib import Path
from typing import Any

from mapsync import conversion, deletes, lookups, records, transforms
from mapsync.allowed import is_allowed
from mapsync.columns import ColumnInfo
from mapsync.errors import ConfigError, RecordRejected
from mapsync.sheet import models
from mapsync.sql_time import time_fitter

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
    """What `prepare` fetched for one batch: the resolver whose lookup caches now hold the
    batch's values (None: the mapping has no lookup), for `apply`."""

    resolver: lookups.Resolver | None = None
    lookups: AbcMapping[str, Any] = dataclasses.field(default_factory=dict)


def _compile_field(
    name: str, spec: models.FieldRule, column: ColumnInfo | None, resolver: lookups.Resolver | None
) -> FieldFn:
    if spec.truncate == "auto":
        if column is None or column.length is None:
            raise ConfigError(
                f"field `{name}`: `truncate: auto` needs a destination column with a length "
                "(give a number instead)"
            )
        spec = spec.model_copy(update={"truncate": column.length})
    resolved = transforms.WITH_RESOLVER  # the rules that read other data get the mapping's resolver
    compiled = [
        (r, s)
        for r, compile_ in transforms.RULES.items()
        if (s := resolved[r](spec, name, resolver) if r in resolved else compile_(spec, name)) is not None
    ]
    compiled = transforms.settle_kept(compiled, spec, name)
    steps = [s for _, s in compiled]
    row_steps = {id(s) for rule, s in compiled if rule in transforms.ROW_RULES}  # called with the row
    check = constraint_check(name, column)
    source, constant = spec.from_, spec.value
    template = conversion.compile_template(spec.template, name) if spec.template is not None else None
    if template is not None or row_steps or spec.on_null == "omit":

        def full(row: records.Row, tally: transforms.Tally) -> Any:
            value: Any
            if template is not None:
                value = template(row)
            else:
                value = row.get(source) if source is not None else constant
            for step in steps:
                value = step(value, tally, row) if id(step) in row_steps else step(value, tally)  # type: ignore[call-arg]
                if value is transforms.OMIT:  # `on_null: omit`: left out of the write
                    return value
            return check(value, tally)

        return full
    if not steps and source is not None:  # a plain copy or rename: the most common rule

        def copy(row: records.Row, tally: transforms.Tally) -> Any:
            return check(row.get(source), tally)

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
        return check(value, tally)

    return fn


def constraint_check(name: str, column: ColumnInfo | None) -> Callable[..., Any]:
    """Coerce to the column's type and check its limits; RecordRejected names field and limit.

    `check(value, tally=None)`: a datetime is fitted to a timestamp column (sql_time.time_fitter:
    aware values into naive columns converted to the column's zone, fractions the column cannot
    keep cut and counted in `tally.truncated`)."""
    if column is None:
        return lambda v, tally=None: v
    kind = _PY_KIND.get(column.python_type) if column.python_type else None
    length, nullable = column.length, column.nullable
    precision, scale = column.precision, column.scale
    no_nul = column.text_nul_forbidden
    allowed = frozenset(column.allowed) if column.allowed is not None else None
    # fast paths, same outcome as the full check below: a value of exactly the column's type
    # that has no limits to check, and text for a text (or untyped) column
    exact = {"int": int, "float": float, "bool": bool, "datetime": dt.datetime, "date": dt.date}.get(
        kind or ""
    )
    text = kind in ("str", None) and allowed is None
    if allowed is not None:
        exact = None  # every value goes through the full check below
    fit = time_fitter(name, zone=column.time_zone, fraction=column.fraction) if kind == "datetime" else None
    if fit is not None:
        exact = None

    def check(value: Any, tally: transforms.Tally | None = None) -> Any:
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
        if fit is not None and isinstance(value, dt.datetime):
            value, lost = fit(value)
            if lost and tally is not None:
                tally.truncated[name] += 1
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
        elif type(value) is int and precision is not None:  # an int bound for numeric(p,s)
            _check_decimal(name, decimal.Decimal(value), precision, scale or 0)
        if allowed is not None and not is_allowed(value, allowed):
            shown = ", ".join(sorted(allowed)[:8]) + (", …" if len(allowed) > 8 else "")
            raise RecordRejected(
                f"field `{name}` value {transforms.show(value)} not allowed (destination allows {shown})",
                name,
                "allowed",
                value,
            )
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
        self,
        fields: dict[str, models.FieldRule],
        key: models.KeyMap,
        columns: dict[str, ColumnInfo],
        on_null: str = "send",
        resolver: lookups.Resolver | None = None,
    ) -> None:
        missing = [f for f in [*fields, *key.to] if columns and f not in columns]
        if missing:
            raise KeyError(", ".join(missing))
        specs = {  # a field without its own `on_null` (or a `default`, which implies it) takes the sync's
            name: spec
            if spec.on_null or spec.default is not None or on_null == "send"
            else spec.model_copy(update={"on_null": on_null})
            for name, spec in fields.items()
        }
        self.fields = {
            name: _compile_field(name, spec, columns.get(name), resolver) for name, spec in specs.items()
        }
        self.omits = any(spec.on_null == "omit" for spec in specs.values())
        self.key_checks = [
            (src, constraint_check(dst, columns.get(dst))) for src, dst in zip(key.from_, key.to, strict=True)
        ]
        self.key_to = list(key.to)

    def _all_failures(self, row: records.Row, first: RecordRejected) -> RecordRejected:
        """The first failure, its message extended by those of the fields after it (the record
        is rejected anyway: what they count is not counted)."""
        names = list(self.fields)
        later = names[names.index(first.field) + 1 :] if first.field in self.fields else []
        scratch = transforms.Tally()
        more = []
        for name in later:
            try:
                self.fields[name](row, scratch)
            except RecordRejected as exc:
                more.append(str(exc))
            except Exception as exc:  # as Mapping.apply words a crashing rule
                more.append(f"field `{name}`: mapping failed: {type(exc).__name__}")
        if not more:
            return first
        message = f"{first}; also: " + "; ".join(more)
        return RecordRejected(message[:2000], first.field, first.rule, first.value)

    def dest_key(self, row: records.Row) -> records.Key:
        return tuple([check(row[src]) for src, check in self.key_checks])

    def values(self, row: records.Row, tally: transforms.Tally) -> records.Row:
        try:
            out = {name: fn(row, tally) for name, fn in self.fields.items()}
        except RecordRejected as exc:
            raise self._all_failures(row, exc) from None
        if self.omits:
            out = {name: value for name, value in out.items() if value is not transforms.OMIT}
        out.update(zip(self.key_to, self.dest_key(row), strict=True))
        return out


class Mapping:
    """A sync's compiled mapping: `prepare(batch)` then pure `apply(change, ctx, tally)`."""

    def __init__(
        self,
        sync: models.SyncConfig,
        columns: dict[str, ColumnInfo],
        child_columns: dict[str, dict[str, ColumnInfo]],
        *,
        connect: Callable[[str], Any] | None = None,
        folder: Path | None = None,
    ) -> None:
        # `connect(name)` opens connections for `lookup` and `map_from: {connection: …}`; a
        # relative `map_from: {file: …}` resolves against `folder` (the sheet's)
        self.resolver = resolver = lookups.Resolver(connect, folder)
        self.main = RowMapping(sync.fields, sync.key, columns, sync.on_null, resolver)
        self.children = {
            name: (
                RowMapping(child.fields, child.key, child_columns.get(name, {}), sync.on_null, resolver),
                list(child.parent.to),
            )
            for name, child in sync.children.items()
        }
        self.deletes = sync.deletes
        self._expiry = sync.deletes.policy == "by_reason"
        self._lookup_fields = [self.main.fields[n] for n, s in sync.fields.items() if s.lookup]
        self._child_lookup_fields = {
            name: [self.children[name][0].fields[n] for n, s in child.fields.items() if s.lookup]
            for name, child in sync.children.items()
        }

    def prepare(self, changes: list[records.Change]) -> Context:
        """Fetch the batch's lookup values not cached yet: one query per lookup (per 1,000 values);
        the context returned is what `apply` reads them through."""
        if not self.resolver.lookups:
            return Context()
        self.resolver.prepare(self._lookup_work(changes))
        return Context(self.resolver)

    def _lookup_work(self, changes: list[records.Change]) -> Iterator[tuple[FieldFn, records.Row]]:
        for change in changes:
            if change.op == "delete":
                continue
            for fn in self._lookup_fields:
                yield fn, change.data
            for name, fns in self._child_lookup_fields.items():
                for child in change.children.get(name, []) if fns else []:
                    for fn in fns:
                        yield fn, child

    def apply(
        self, change: records.Change, ctx: Context, tally: transforms.Tally
    ) -> records.Mapped | records.Rejection | None:
        """Translate one change. None means: nothing to send (a delete under `ignore`)."""
        try:
            if change.op == "delete":
                return self._delete(change)
            values = self.main.values(change.data, tally)
            if self._expiry and deletes.disable_expired_update(self.deletes, change.data):
                values[self.deletes.field or ""] = self.deletes.value  # an update showing expiry
                tally.expired[self.deletes.field or ""] += 1
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
            return records.Rejection(change.key, str(exc), exc.field, exc.rule, change.version, exc.value)
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
        has_key = change.data and all(src in change.data for src, _ in self.main.key_checks)
        dest_key = self.main.dest_key(change.data) if has_key else change.key
        outcome = deletes.DELETE_POLICIES[self.deletes.policy](
            self.deletes, dict(zip(self.main.key_to, dest_key, strict=True)), change.data
        )
        if outcome is None:
            return None
        op, values = outcome
        return records.Mapped(op, change.key, dest_key, change.version, values, {}, "deleted")  # type: ignore[arg-type]
