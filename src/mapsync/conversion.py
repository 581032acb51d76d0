"""Field rules that reshape a value: `template` (a source), `trim`, `case`, `split`, `timezone`
and the `python` hook. They register in `rules.RULES`; see docs/translations.md."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import string
import zoneinfo
from collections.abc import Callable
from typing import Any

from mapsync import records
from mapsync.errors import ConfigError, RecordRejected
from mapsync.rules import Step, Tally, rule, show
from mapsync.sheet import models

UTC = dt.UTC


def compile_template(template: str, field: str) -> Callable[[records.Row], str]:
    """`"{first} {last}"` over the source row. A NULL part is empty text; a column the row
    lacks is a rejection (rule `template`); a malformed template is a ConfigError now."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"field `{field}`: template {template!r} is malformed: {exc}") from None
    names = [name for _, name, _, _ in parts if name is not None]
    if not names:
        raise ConfigError(f"field `{field}`: template {template!r} names no source column")
    for name in names:
        if not name.isidentifier():
            raise ConfigError(
                f"field `{field}`: template {template!r}: `{{{name}}}` is not a column name "
                "(write `{column}`)"
            )
    columns = sorted(set(names))

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


def _zone(name: str, field: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"field `{field}`: timezone {name!r} is not an IANA time zone") from None


@rule("timezone")
def _timezone(spec: models.FieldRule, field: str) -> Step | None:
    if spec.timezone is None:
        return None
    source_name = spec.timezone.source
    source = _zone(source_name, field)
    aware = spec.timezone.target == "aware"
    target = None if aware else _zone(spec.timezone.target, field)

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


HOOK_GROUP = "mapsync.hooks"


def _hook(spec: models.FieldRule, field: str) -> tuple[str, Callable[..., Any]]:
    """The `python` rule's function and how messages name it; ConfigError when it does not load."""
    python = spec.python
    if isinstance(python, models.PythonHook) or (isinstance(python, str) and python.startswith("ep:")):
        name = python.entry_point if isinstance(python, models.PythonHook) else python[3:]
        found = [ep for ep in importlib.metadata.entry_points(group=HOOK_GROUP) if ep.name == name]
        ref = f"entry point {name}"
        if not found:
            known = sorted({ep.name for ep in importlib.metadata.entry_points(group=HOOK_GROUP)})
            raise ConfigError(
                f"field `{field}`: python: no entry point {name!r} in the group {HOOK_GROUP} "
                f"(installed: {', '.join(known) or 'none'}); install the package that declares it"
            )
        try:
            fn = found[0].load()
        except Exception as exc:
            raise ConfigError(
                f"field `{field}`: cannot load python {ref} ({found[0].value}): {type(exc).__name__}: {exc}"
            ) from None
    else:
        ref = str(python)
        module_name, _, attr = ref.partition(":")
        if not module_name or not attr:
            raise ConfigError(
                f"field `{field}`: python {ref!r} should be `package.module:function` (or `ep:name`)"
            )
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # ImportError, AttributeError, or the module failing as it loads
            raise ConfigError(
                f"field `{field}`: cannot load python {ref!r}: {type(exc).__name__}: {exc}"
            ) from None
    if not callable(fn):
        raise ConfigError(f"field `{field}`: python {ref!r} is not a function")
    return ref, fn


@rule("python")
def _python(spec: models.FieldRule, field: str) -> Step | None:
    if spec.python is None:
        return None
    ref, fn = _hook(spec, field)

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
