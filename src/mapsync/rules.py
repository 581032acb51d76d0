"""The base of the field rules: the step and tally types, the rule registry (`RULES`, kept in
`ORDER`) and `show` for values in messages (`convert`, the exact conversion the rules share,
is in mapsync/casts.py). The rule modules (transforms, conversion, validation, lookups) import
this; `mapsync.transforms` is the facade that loads them all and re-exports these names."""

from __future__ import annotations

import collections
import dataclasses
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


# rules kept in their own modules register themselves in `RULES` when imported; the delete
# policies live in mapsync/deletes.py and stay importable from here
