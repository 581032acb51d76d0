"""Field rules that reshape a value: `template` (a source), `trim`, `case`, `split`, `timezone`
and the `python` hook. They register in `rules.RULES`; see docs/translations.md."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync import records
from mapsync.errors import RecordRejected
from mapsync.rules import Step, Tally, rule, show
from mapsync.sheet import models, rule_checks

UTC = dt.UTC


def compile_template(template: str, field: str) -> Callable[[records.Row], str]:
    """`"{first} {last}"` over the source row. A NULL part is empty text; a column the row
    lacks is a rejection (rule `template`); a malformed template is a ConfigError now."""
    columns = sorted(set(rule_checks.template_names(template, field)))

    def build(row: records.Row) -> str:
        values = {}
        for name in columns:
            if name not in row:
                raise RecordRejected(
                    f"field `{field}`: template column `{name}` is not in the source row", field, "template"
                )
            value = row[name]
            values[name] = "" if value is None else value
        try:
            return template.format_map(values)
        except (ValueError, TypeError) as exc:
            raise RecordRejected(
                f"field `{field}`: template {template!r} failed: {exc}", field, "template"
            ) from None

    return build


@rule("trim")
def _trim(spec: models.FieldRule, field: str) -> Step | None:
    if not spec.trim:
        return None

    def step(value: Any, tally: Tally) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    return step


@rule("case")
def _case(spec: models.FieldRule, field: str) -> Step | None:
    if spec.case is None:
        return None
    change: Callable[[str], str] = {"upper": str.upper, "lower": str.lower, "title": str.title}[spec.case]

    def step(value: Any, tally: Tally) -> Any:
        return change(value) if isinstance(value, str) else value

    return step


@rule("split")
def _split(spec: models.FieldRule, field: str) -> Step | None:
    if spec.split is None:
        return None
    sep, index = spec.split.sep, spec.split.index

    def step(value: Any, tally: Tally) -> Any:
        if value is None:
            return None
        parts = str(value).split(sep)
        return parts[index] if -len(parts) <= index < len(parts) else None

    return step


@rule("timezone")
def _timezone(spec: models.FieldRule, field: str) -> Step | None:
    if spec.timezone is None:
        return None
    source_name = spec.timezone.source
    source = rule_checks.zone(source_name, field)
    aware = spec.timezone.target == "aware"
    target = None if aware else rule_checks.zone(spec.timezone.target, field)

    def step(value: Any, tally: Tally) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise RecordRejected(
                f"value {show(value)} of `{field}` is not a date-time (add `cast: datetime`)",
                field,
                "timezone",
            )
        try:
            if value.tzinfo is None:
                local = value.replace(tzinfo=source)  # fold=0: an ambiguous time is the earlier one
                exists = local.astimezone(UTC).astimezone(source).replace(tzinfo=None) == value
                if exists and local.utcoffset() != local.replace(fold=1).utcoffset():
                    tally.dst_ambiguous[field] += 1  # happened twice (clocks went back): counted
            else:
                local, exists = value, True  # an aware value keeps its own zone
            result = local if target is None else local.astimezone(target).replace(tzinfo=None)
        except OverflowError:  # within a day of year 1 or 9999
            raise RecordRejected(
                f"value {show(value)} of `{field}` is out of range in another time zone", field, "timezone"
            ) from None
        if not exists:
            raise RecordRejected(
                f"value {show(value)} of `{field}` does not exist in {source_name} "
                "(skipped by a daylight-saving change)",
                field,
                "timezone",
            )
        return result

    return step


@rule("python")
def _python(spec: models.FieldRule, field: str) -> Step | None:
    if spec.python is None:
        return None
    ref, fn = rule_checks.hook(spec, field)

    def step(value: Any, tally: Tally, row: records.Row) -> Any:  # a ROW_RULES step
        try:
            return fn(value, row)
        except ValueError as exc:
            raise RecordRejected(f"field `{field}`: {exc} (python {ref})", field, "python") from None
        except Exception as exc:
            raise RecordRejected(
                f"field `{field}`: python {ref} raised {type(exc).__name__}: {exc}"[:500], field, "python"
            ) from None

    return step  # type: ignore[return-value]  # called with the row: see rules.ROW_RULES
