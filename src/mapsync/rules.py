"""The base of the field rules: the step and tally types, the rule registry (`RULES`, kept in
`ORDER`), `show` for values in messages and `convert`, the exact conversion `cast` and the
validation rules share. The rule modules (transforms, conversion, validation, lookups) import
this; `mapsync.transforms` is the facade that loads them all and re-exports these names."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
from collections.abc import Callable
from typing import Any

from mapsync.sheet import models

Step = Callable[[Any, "Tally"], Any]
Compiler = Callable[[models.FieldRule, str], Step | None]


@dataclasses.dataclass
class Tally:
    """What rules did on purpose in one batch: counted and reported, never silent."""

    truncated: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    defaulted: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    kept: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    corrected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    dst_ambiguous: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    # updates written disabled because they show the row expired (`deletes.policy: by_reason`)
    expired: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    # fields whose `map … on_unknown: keep` kept the value for a later `country`/`lookup` to place
    # (counted in `kept` only if that rule then rejects it: see `settle_kept`)
    pending_kept: set[str] = dataclasses.field(default_factory=set)


# the order rules apply in (models.FieldRule's docstring); `RULES` is kept in this order
ORDER = (
    "on_null", "trim", "case", "split", "map", "map_from", "country", "lookup", "cast",
    "timezone", "python", "required", "pattern", "min", "max", "enum", "truncate",
)  # fmt: skip
# steps of these rules are called as `step(value, tally, row)`: they read the whole source row
ROW_RULES = frozenset({"python"})
RULES: dict[str, Compiler] = {}


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # what `on_null: omit` turns NULL into: the field is left out of the write


def rule(name: str) -> Callable[[Compiler], Compiler]:
    if name not in ORDER:
        raise ValueError(f"rule {name!r} has no place in rules.ORDER")

    def register(fn: Compiler) -> Compiler:
        RULES[name] = fn
        ordered = sorted(RULES.items(), key=lambda item: ORDER.index(item[0]))
        RULES.clear()
        RULES.update(ordered)
        return fn

    return register


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…'"


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def convert(value: Any, kind: str, scale: int | None = None) -> Any:
    """Exact conversion; raises ValueError for a value that does not convert."""
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "decimal":
        if isinstance(value, float):
            value = repr(value)  # the shortest text of the float, not its binary expansion
        result = decimal.Decimal(str(value).strip())
        if not result.is_finite():
            raise ValueError("not finite")
        if scale is not None:
            result = result.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
        return result
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        number = decimal.Decimal(str(value).strip())
        if number != number.to_integral_value():
            raise ValueError("has a fraction")
        return int(number)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("not a boolean")
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001
        return dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value).strip()[:10])
    raise ValueError(kind)


# rules kept in their own modules register themselves in `RULES` when imported; the delete
# policies live in mapsync/deletes.py and stay importable from here
