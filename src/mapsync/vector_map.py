"""A sync's field rules compiled to pyarrow.compute: the columnar fast path of the mapping.

`compile_vector(sync, columns, source)` reads the same sheet and destination catalog as
`mapping.Mapping` and returns a `VectorMapping` whose `apply(batch)` maps a whole Arrow record
batch at once, or None when the sync has a rule without an exact vector form (the sync then
stays on the per-record path). The per-record path (`mapping.RowMapping.values`) is the
reference: for every row `apply` marks ok, the row of `VectorOut.table` equals what `values`
gives for that row, with the same Python types, and the counters equal those `values` adds to
its tally. A row the vector form cannot be sure of is marked not ok and goes, whole, to the
per-record path, which names key, field and reason; marking too many rows not ok costs time,
never correctness.

How it is built: each field is a chain of vector steps decided at compile time. The Python
kind of the value (`str`, `int`, `bool`, `float`, `datetime`, `date`, or `null` for a value
that is always None) is followed through the chain statically, so every step knows the one
Python type its rows hold; a step that could give two types for one field (a `map` whose
values mix types, a `default` of another type than the source) has no vector form. A step
returns the new array and a mask of rows it cannot vouch for (`bad`); counters are masks
too, summed over the ok rows at the end. A constant (`value:`, or only a `default`) is mapped
once by the per-record function itself and repeated.

Vectorised (everything else makes `compile_vector` return None): copy/rename, constants, the
key columns with their checks; `on_null` send/reject/default; `trim` (Python's `str.strip`
whitespace set, as an RE2 class); `case: upper|lower` on ASCII text (other text not ok);
`map` with `on_unknown` reject/default/keep; `required`; `truncate: N|auto`; the destination
check: NOT NULL, text length, NUL, allowed values of text, int into int/float/numeric(p,s)
(a bound check), int into text, bool into int, digit text (`-?[0-9]{1,18}`) into int, naive
timestamps (the column's fraction cut and counted), and text into a timestamp column in the
forms `YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}]` (a lenient strptime, its result cast back to text and
compared: a date the calendar lacks, 24:00, second 60 or year 0 is not ok; offsets, `Z` and
every other form are not ok, though Python may read them).

Output types follow the per-record path's Python values, not the column: text `string`, ints
`int64` (also into a float or numeric column, where the per-record path keeps the int), `bool`,
`float64`, naive `timestamp[us]`, `date32`; a field that is always NULL takes its column's type
where it has one of these (a numeric column's: `null`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mapsync import mapping, transforms
from mapsync.columns import ColumnInfo
from mapsync.sheet import models

# every character Python's str.strip() and str.isspace() take for white space (test_vector_map
# checks the list against Python's; computing it here walked all of Unicode at every import)
WHITESPACE = (
    0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001,
    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029,
    0x202F, 0x205F, 0x3000,
)  # fmt: skip
_WS = "".join(f"\\x{{{c:x}}}" for c in WHITESPACE)  # as an RE2 class
_STRIP = f"^[{_WS}]+|[{_WS}]+$"
_NOT_WS = f"[^{_WS}]"
_TIME_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"
_EPOCH = "1970-01-01 00:00:00"
_INT_TEXT = r"^-?[0-9]{1,18}$"  # always within int64, and what Decimal(text) reads alike
_INT64 = (-(2**63), 2**63 - 1)
# rules of a field that make the whole sync stay on the per-record path
_NO_VECTOR_FORM = (
    "template", "split", "map_from", "country", "lookup", "cast", "timezone", "python",
    "pattern", "min", "max", "enum",
)  # fmt: skip

_ARROW = {
    "str": pa.string(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "float": pa.float64(),
    "datetime": pa.timestamp("us"),
    "date": pa.date32(),
}

# (array, Python kind of its values): what flows through a field's steps
Vec = tuple[pa.Array, str]
# a step: (value) -> (value, rows not ok or None, {counter: rows counted})
Step = Callable[[Vec], tuple[Vec, pa.Array | None, dict[str, pa.Array]]]


class NoVectorForm(Exception):
    """The sync (a rule, a type pair) has no exact vector form: it stays on the per-record path."""


@dataclasses.dataclass
class VectorOut:
    """The mapped batch: rows `ok` equal the per-record path's values; counters over ok rows."""

    table: pa.Table
    ok: pa.BooleanArray
    truncated: dict[str, int]
    defaulted: dict[str, int]
    kept: dict[str, int]


def _kind_of_arrow(kind: pa.DataType) -> str | None:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_integer(kind) and kind != pa.uint64():
        return "int"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_timestamp(kind) and kind.tz is None and kind.unit in ("s", "ms", "us"):
        return "datetime"
    if pa.types.is_date32(kind):
        return "date"
    if pa.types.is_null(kind):
        return "null"
    return None


def _kind_of_value(value: Any) -> str:
    """The kind of a Python constant; NoVectorForm for one without an exact Arrow form."""
    if value is None:
        return "null"
    if type(value) is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise NoVectorForm("an int beyond int64")
        return "int"
    if type(value) is dt.datetime:
        if value.tzinfo is not None:
            raise NoVectorForm("an aware datetime")
        return "datetime"
    kind = {str: "str", bool: "bool", float: "float", dt.date: "date"}.get(type(value))
    if kind is None:
        raise NoVectorForm(f"a constant of type {type(value).__name__}")
    return kind


def _scalar(value: Any, kind: str) -> pa.Scalar:
    return pa.scalar(value, type=_ARROW.get(kind, pa.null()))


def _or(a: pa.Array | None, b: pa.Array | None) -> pa.Array | None:
    if b is None:
        return a
    b = pc.fill_null(b, False)
    return b if a is None else pc.or_(a, b)


def _is_null(arr: pa.Array) -> pa.Array:
    return pc.is_null(arr)


# --------------------------------------------------------------------------- rule steps


def _on_null(spec: models.FieldRule, kind: str) -> tuple[Step | None, str]:
    policy = spec.on_null or ("default" if spec.default is not None else "send")
    if policy == "omit":
        raise NoVectorForm("on_null: omit")
    if policy == "send" or (policy == "default" and spec.default is None):
        return None, kind
    if policy == "reject":
        return (lambda v: (v, _is_null(v[0]), {})), kind
    fallback = spec.default
    fkind = _kind_of_value(fallback)
    out = fkind if kind == "null" else kind
    if fkind != out:
        raise NoVectorForm("a default of another type than the value")
    fill = _scalar(fallback, out)

    def default(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v
        empty = _is_null(arr)
        if kind == "str":
            empty = pc.or_(empty, pc.fill_null(pc.equal(arr, ""), False))
        if kind == "null":
            arr = pa.nulls(len(arr), type=fill.type)
        return (pc.if_else(empty, fill, arr), out), None, {"defaulted": empty}

    return default, out


def _trim(kind: str) -> Step:
    def step(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v
        cut = pc.replace_substring_regex(arr, _STRIP, "")
        return (pc.if_else(pc.equal(cut, ""), pa.scalar(None, cut.type), cut), kind), None, {}

    return step


def _case(case: str, kind: str) -> Step:
    if case == "title":
        raise NoVectorForm("case: title")
    change = pc.ascii_upper if case == "upper" else pc.ascii_lower

    def step(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v  # Python's upper/lower on text beyond ASCII (ß → SS) is not Arrow's: not ok
        return (change(arr), kind), pc.invert(pc.string_is_ascii(arr)), {}

    return step


def _map(spec: models.FieldRule, kind: str) -> tuple[Step, str]:
    if kind not in ("str", "int", "null"):  # str(value) of the rest is not Arrow's cast to text
        raise NoVectorForm(f"map over {kind} values")
    table = {str(k): v for k, v in (spec.map or {}).items()}
    policy, fallback = spec.on_unknown, spec.map_default
    kinds = {_kind_of_value(v) for v in table.values()}
    if policy == "default":
        kinds.add(_kind_of_value(fallback))
    kinds.discard("null")
    if len(kinds) > 1:
        raise NoVectorForm("a map whose values mix types")
    out = kinds.pop() if kinds else (kind if policy == "keep" else "null")
    keys = pa.array(list(table), type=pa.string())
    values = pa.array(list(table.values()), type=_ARROW.get(out, pa.null()))
    fill = _scalar(fallback, out)

    def step(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v
        if kind == "null":
            return (pa.nulls(len(arr), type=values.type), out), None, {}
        text = arr if kind == "str" else pc.cast(arr, pa.string())
        at = pc.index_in(text, value_set=keys)
        mapped = pc.take(values, at)
        unknown = pc.and_(pc.is_valid(arr), pc.is_null(at))
        if policy == "reject":
            return (mapped, out), unknown, {}
        if policy == "default":
            return (pc.if_else(unknown, fill, mapped), out), None, {"defaulted": unknown}
        if kind != out:  # a kept value of another type than the mapped ones
            return (mapped, out), unknown, {"kept": unknown}
        return (pc.if_else(unknown, arr, mapped), out), None, {"kept": unknown}

    return step, out


def _required(kind: str) -> Step:
    def step(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v
        bad = _is_null(arr)
        if kind == "str":
            bad = pc.or_(bad, pc.invert(pc.fill_null(pc.match_substring_regex(arr, _NOT_WS), False)))
        return v, bad, {}

    return step


def _truncate(limit: int) -> Step:
    def step(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, kind = v
        over = pc.fill_null(pc.greater(pc.utf8_length(arr), limit), False)
        cut = pc.if_else(over, pc.utf8_slice_codeunits(arr, 0, limit), arr)
        return (cut, kind), None, {"truncated": over}

    return step


# --------------------------------------------------------------------------- the destination check


def _fraction_cut(fraction: int | None) -> int | None:
    return 10 ** (6 - fraction) if fraction is not None and fraction < 6 else None


def _fit(arr: pa.Array, cut: int | None) -> tuple[pa.Array, pa.Array | None]:
    """sql_time.time_fitter on naive times: the fraction the column cannot keep, cut (and the
    rows cut). A naive value is never converted to the column's zone."""
    arr = pc.cast(arr, pa.timestamp("us"))
    if cut is None:
        return arr, None
    micro = pc.add(pc.multiply(pc.millisecond(arr), 1000), pc.microsecond(arr))  # 0 … 999,999
    rest = pc.subtract(micro, pc.multiply(pc.divide(micro, cut), cut))
    lost = pc.fill_null(pc.not_equal(rest, 0), False)
    whole = pc.cast(pc.subtract(pc.cast(arr, pa.int64()), rest), pa.timestamp("us"))
    return whole, lost


def _parse_time(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Text in `YYYY-MM-DD[T ]HH:MM:SS[.f]` as naive times, as transforms.convert(…, "datetime")
    reads them; (times, rows not ok: any other text, or a date or time the calendar lacks).

    A lenient strptime turns Feb 30 into Mar 1 and :60 into the next minute, so the time it
    reads is written back as text (Arrow's cast, much cheaper than strftime) and must equal the
    text read; the rows that pass are parsed whole, fraction and all, by Arrow's strict ISO cast
    (the others are given a harmless text first, since the cast fails the whole array)."""
    form = pc.fill_null(pc.match_substring_regex(arr, _TIME_TEXT), False)
    form = pc.and_(form, pc.invert(pc.fill_null(pc.starts_with(arr, "0000"), False)))  # no year 0
    base = pc.replace_substring(pc.utf8_slice_codeunits(arr, 0, 19), "T", " ")
    seconds = pc.strptime(base, "%Y-%m-%d %H:%M:%S", "s", error_is_null=True)
    same = pc.fill_null(pc.equal(pc.cast(seconds, pa.string()), base), False)
    good = pc.and_(form, same)
    moment = pc.cast(pc.if_else(pc.or_(good, pc.is_null(arr)), arr, _EPOCH), pa.timestamp("us"))
    return moment, pc.and_(pc.is_valid(arr), pc.invert(good))


def _check(name: str, column: ColumnInfo | None, kind: str, *, counted: bool) -> tuple[Step, str]:
    """mapping.constraint_check as a vector step for values of `kind`; the output kind."""
    if column is None:
        return (lambda v: (v, None, {})), kind
    ckind = mapping._PY_KIND.get(column.python_type) if column.python_type else None
    allowed = pa.array(sorted(column.allowed), type=pa.string()) if column.allowed is not None else None
    cut = _fraction_cut(column.fraction) if ckind == "datetime" else None
    bound: int | None = None
    out = kind
    convert: Callable[[pa.Array], tuple[pa.Array, pa.Array | None, pa.Array | None]] | None = None
    if kind == "int" and column.precision is not None and ckind != "decimal":
        raise NoVectorForm("an int into a column with a precision")
    if kind == "null":
        out = _null_kind(column)
    elif ckind is None or ckind == kind or (ckind == "float" and kind == "int"):
        if kind == "datetime":
            convert = lambda a: (*_fit(a, cut), None)  # noqa: E731
    elif ckind == "str" and kind == "int":
        out, convert = "str", lambda a: (pc.cast(a, pa.string()), None, None)
    elif ckind == "int" and kind == "bool":
        out, convert = "int", lambda a: (pc.cast(a, pa.int64()), None, None)
    elif ckind == "int" and kind == "str":

        def convert(a: pa.Array) -> tuple[pa.Array, pa.Array | None, pa.Array | None]:
            digits = pc.fill_null(pc.match_substring_regex(a, _INT_TEXT), False)
            number = pc.cast(pc.if_else(digits, a, "0"), pa.int64())
            wrong = pc.and_(pc.is_valid(a), pc.invert(digits))
            return pc.if_else(pc.is_null(a), pa.scalar(None, pa.int64()), number), None, wrong

        out = "int"
    elif ckind == "decimal" and kind == "int":
        if column.precision is not None:
            room = column.precision - (column.scale or 0)
            if room < 1:
                raise NoVectorForm("numeric with no integer digits")
            bound = 10**room if room <= 18 else None
    elif ckind == "datetime" and kind == "str":

        def convert(a: pa.Array) -> tuple[pa.Array, pa.Array | None, pa.Array | None]:
            moment, bad = _parse_time(a)
            fitted, lost = _fit(moment, cut)
            return fitted, lost, bad

        out = "datetime"
    else:
        raise NoVectorForm(f"{kind} values into a {column.type_name} column")
    if allowed is not None and out != "str":
        raise NoVectorForm("allowed values checked on a value that is not text")
    length, nullable, no_nul = column.length, column.nullable, column.text_nul_forbidden

    def check(v: Vec) -> tuple[Vec, pa.Array | None, dict[str, pa.Array]]:
        arr, _ = v
        bad = None if nullable else _is_null(arr)
        counts: dict[str, pa.Array] = {}
        if kind == "null":
            return (pa.nulls(len(arr), type=_ARROW.get(out, pa.null())), out), bad, counts
        if convert is not None:
            arr, lost, wrong = convert(arr)
            bad = _or(bad, wrong)
            if lost is not None and counted:
                counts["truncated"] = lost
        if out == "str":
            if length is not None:
                bad = _or(bad, pc.greater(pc.utf8_length(arr), length))
            if no_nul:
                bad = _or(bad, pc.match_substring(arr, "\x00"))
            if allowed is not None:
                bad = _or(bad, pc.and_(pc.is_valid(arr), pc.invert(pc.is_in(arr, value_set=allowed))))
        if bound is not None:
            bad = _or(bad, pc.or_(pc.greater_equal(arr, bound), pc.less_equal(arr, -bound)))
        return (arr, out), bad, counts

    return check, out


# --------------------------------------------------------------------------- compiling


@dataclasses.dataclass
class _Field:
    name: str
    source: str | None  # the source column; None: `constant` holds the value
    steps: list[Step]
    kind: str  # the source's kind
    out: str  # the kind of the mapped values (their Arrow type)
    constant: Any = None
    constant_bad: bool = False  # the per-record path rejects the constant: every row
    constant_counts: dict[str, int] = dataclasses.field(default_factory=dict)


def _compile_field(
    name: str,
    spec: models.FieldRule,
    column: ColumnInfo | None,
    source: dict[str, pa.DataType],
    fn: mapping.FieldFn,
) -> _Field:
    unsupported = [rule for rule in _NO_VECTOR_FORM if getattr(spec, rule) is not None]
    if unsupported:
        raise NoVectorForm(f"field `{name}`: {', '.join(unsupported)}")
    if spec.on_null == "omit":
        raise NoVectorForm("on_null: omit")
    if spec.from_ is None:  # a constant: the per-record function once, for every row
        tally = transforms.Tally()
        try:
            value = fn({}, tally)
        except Exception:  # RecordRejected, or a crash Mapping.apply makes a rejection of
            return _Field(name, None, [], "null", _null_kind(column), None, True)
        counts = {c: n for c in ("truncated", "defaulted", "kept") if (n := getattr(tally, c)[name])}
        kind = _kind_of_value(value)
        out = _null_kind(column) if kind == "null" else kind
        return _Field(name, None, [], kind, out, value, False, counts)
    start = _kind_of_arrow(source[spec.from_]) if spec.from_ in source else "null"  # row.get: None
    if start is None:
        raise NoVectorForm(f"source column `{spec.from_}` of type {source[spec.from_]}")
    kind = start
    steps: list[Step] = []
    step, kind = _on_null(spec, kind)
    if step is not None:
        steps.append(step)
    if spec.trim and kind == "str":
        steps.append(_trim(kind))
    if spec.case is not None and kind == "str":
        steps.append(_case(spec.case, kind))
    if spec.map is not None:
        step, kind = _map(spec, kind)
        steps.append(step)
    if spec.required:
        steps.append(_required(kind))
    limit = spec.truncate
    if limit == "auto":
        if column is None or column.length is None:
            raise NoVectorForm("truncate: auto without a column length")
        limit = column.length
    if isinstance(limit, int) and kind == "str":
        steps.append(_truncate(limit))
    step, kind = _check(name, column, kind, counted=True)
    steps.append(step)
    return _Field(name, spec.from_, steps, start, kind)


def _null_kind(column: ColumnInfo | None) -> str:
    """The kind (Arrow type) of a column of NULLs: the destination column's, where it has one."""
    ckind = mapping._PY_KIND.get(column.python_type) if column and column.python_type else None
    return ckind if ckind is not None and ckind in _ARROW else "null"


class VectorMapping:
    """A sync's field rules over Arrow record batches; see the module docstring."""

    def __init__(
        self,
        fields: list[_Field],
        keys: list[tuple[str, str, str, Step]],
        names: list[str],
        out_kinds: dict[str, str],
        source: dict[str, pa.DataType],
    ) -> None:
        self._fields = fields
        self._keys = keys  # (source column, destination column, source kind, check)
        self._names = names
        self._kinds = out_kinds
        used = {f.source for f in fields if f.source is not None} | {k[0] for k in keys}
        self._source = {name: kind for name, kind in source.items() if name in used}

    def apply(self, rb: pa.RecordBatch) -> VectorOut:
        """The batch mapped; its columns must have the types `compile_vector` was given."""
        for name, kind in self._source.items():
            index = rb.schema.get_field_index(name)
            if index < 0 or rb.schema.field(index).type != kind:
                got = rb.schema.field(index).type if index >= 0 else "no column"
                raise ValueError(f"source column `{name}`: compiled for {kind}, the batch has {got}")
        n = rb.num_rows
        bad: pa.Array | None = None
        counted: list[tuple[str, str, pa.Array | int]] = []
        values: dict[str, pa.Array] = {}
        for f in self._fields:
            if f.source is None:
                arr = pa.repeat(_scalar(f.constant, f.out), n)
                if f.constant_bad:
                    bad = _or(bad, pa.repeat(pa.scalar(True), n))
                counted += [(c, f.name, k) for c, k in f.constant_counts.items()]
            else:
                vec: Vec = (self._column(rb, f.source, f.kind), f.kind)
                for step in f.steps:
                    vec, wrong, counts = step(vec)
                    bad = _or(bad, wrong)
                    counted += [(c, f.name, m) for c, m in counts.items()]
                arr = vec[0]
            values[f.name] = arr
        for src, dst, kind, check in self._keys:
            (arr, _), wrong, _counts = check((self._column(rb, src, kind), kind))
            bad = _or(bad, wrong)
            values[dst] = arr
        ok = pc.invert(bad) if bad is not None else pa.repeat(pa.scalar(True), n)
        if isinstance(ok, pa.ChunkedArray):  # a kernel over a chunked input answers chunked
            ok = ok.combine_chunks()
        tallies: dict[str, dict[str, int]] = {"truncated": {}, "defaulted": {}, "kept": {}}
        for counter, name, rows in counted:
            hits = (
                rows * pc.sum(ok.cast(pa.int64()), min_count=0).as_py()
                if isinstance(rows, int)
                else pc.sum(pc.and_(rows, ok).cast(pa.int64()), min_count=0).as_py()
            )
            if hits:
                tallies[counter][name] = tallies[counter].get(name, 0) + hits
        columns = [self._typed(values[name], self._kinds[name]) for name in self._names]
        table = pa.Table.from_arrays(columns, names=self._names)
        return VectorOut(table, ok, tallies["truncated"], tallies["defaulted"], tallies["kept"])

    @staticmethod
    def _column(rb: pa.RecordBatch, name: str, kind: str) -> pa.Array:
        index = rb.schema.get_field_index(name)
        if index < 0:
            return pa.nulls(rb.num_rows)
        arr = rb.column(index)
        if kind in ("str", "int", "float"):  # one width each: large text, int32, float32 widened
            arr = pc.cast(arr, _ARROW[kind])
        return arr

    @staticmethod
    def _typed(arr: pa.Array, kind: str) -> pa.Array:
        want = _ARROW.get(kind)
        if want is not None and arr.type != want:
            return pc.cast(arr, want)
        return arr


def compile_vector(
    sync: models.SyncConfig, columns: dict[str, ColumnInfo], source: dict[str, pa.DataType]
) -> VectorMapping | None:
    """The sync's mapping over Arrow batches whose columns have the types `source` gives, or
    None when anything in it has no exact vector form (the per-record path then maps it)."""
    if sync.children or sync.deletes.policy == "by_reason":
        return None
    try:
        rows = mapping.RowMapping(sync.fields, sync.key, columns, sync.on_null)
    except Exception:  # what the per-record compile refuses is not ours to map
        return None
    if rows.omits:
        return None
    try:
        fields = []
        kinds: dict[str, str] = {}
        for name, spec in sync.fields.items():
            if not (spec.on_null or spec.default is not None or sync.on_null == "send"):
                spec = spec.model_copy(update={"on_null": sync.on_null})  # as RowMapping does
            field = _compile_field(name, spec, columns.get(name), source, rows.fields[name])
            fields.append(field)
            kinds[name] = field.out
        keys = []
        for src, dst in zip(sync.key.from_, sync.key.to, strict=True):
            if src not in source:
                return None  # row[src] fails for every row
            kind = _kind_of_arrow(source[src])
            if kind is None:
                return None
            check, kinds[dst] = _check(dst, columns.get(dst), kind, counted=False)
            keys.append((src, dst, kind, check))
    except NoVectorForm:
        return None
    names = list(sync.fields) + [k for k in sync.key.to if k not in sync.fields]
    return VectorMapping(fields, keys, names, kinds, source)
