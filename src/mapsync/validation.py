"""Checks on the translated value: `required`, `pattern`, `min`, `max`, `enum`. A value that
fails one is a rejection naming the field and the check; NULL passes all but `required`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync import casts
from mapsync.errors import RecordRejected
from mapsync.rules import Step, Tally, rule, show
from mapsync.sheet import models, rule_checks


@rule("required")
def _required(spec: models.FieldRule, field: str) -> Step | None:
    if not spec.required:
        return None

    def step(value: Any, tally: Tally) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RecordRejected(f"field `{field}` is required but is {show(value)}", field, "required")
        return value

    return step


@rule("pattern")
def _pattern(spec: models.FieldRule, field: str) -> Step | None:
    if spec.pattern is None:
        return None
    regex = rule_checks.regex(spec.pattern, field)

    def step(value: Any, tally: Tally) -> Any:
        if value is not None and regex.fullmatch(value if isinstance(value, str) else str(value)) is None:
            raise RecordRejected(
                f"value {show(value)} of `{field}` does not match the pattern {spec.pattern!r}",
                field,
                "pattern",
            )
        return value

    return step


def _limit(spec: models.FieldRule, field: str, key: str) -> Step | None:
    raw = getattr(spec, key)
    if raw is None:
        return None
    kind, bound = rule_checks.bound(raw, key, field)
    outside: Callable[[Any], bool] = (lambda v: v < bound) if key == "min" else (lambda v: v > bound)
    word = "below the minimum" if key == "min" else "above the maximum"

    def step(value: Any, tally: Tally) -> Any:
        if value is None:
            return None
        try:
            if kind == "date" and isinstance(value, dt.datetime):
                comparable: Any = value.date()  # a time on the last day is within `max` of that day
            else:
                comparable = casts.convert(value, kind)
            out = outside(comparable)
        except (ValueError, ArithmeticError, TypeError):  # not a number/date, or naive vs aware
            raise RecordRejected(
                f"value {show(value)} of `{field}` cannot be compared with {key} {raw}", field, key
            ) from None
        if out:
            raise RecordRejected(f"value {show(value)} of `{field}` is {word} {raw}", field, key)
        return value

    return step


@rule("min")
def _min(spec: models.FieldRule, field: str) -> Step | None:
    return _limit(spec, field, "min")


@rule("max")
def _max(spec: models.FieldRule, field: str) -> Step | None:
    return _limit(spec, field, "max")


@rule("enum")
def _enum(spec: models.FieldRule, field: str) -> Step | None:
    if spec.enum is None:
        return None
    allowed = {str(v) for v in spec.enum}  # as text, like `map` keys
    listed = ", ".join(str(v) for v in spec.enum[:8]) + (", …" if len(spec.enum) > 8 else "")

    def step(value: Any, tally: Tally) -> Any:
        if value is not None and str(value) not in allowed:
            raise RecordRejected(
                f"value {show(value)} of `{field}` is not one of {{{listed}}}", field, "enum"
            )
        return value

    return step
