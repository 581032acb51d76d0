"""A field rule's settings checked as data, without compiling the rule: what `mapsync validate`
finds without connecting (sheet/checks.py), and what the rules themselves (conversion.py,
validation.py) raise when they compile, with the same messages. Each function raises the
rule's `ConfigError`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import re
import string
import zoneinfo
from collections.abc import Callable
from typing import Any

from mapsync import casts
from mapsync.errors import ConfigError
from mapsync.sheet import models


def template_names(template: str, field: str) -> list[str]:
    """The source columns a `template` names, in order."""
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
    return names


def zone(name: str, field: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"field `{field}`: timezone {name!r} is not an IANA time zone") from None


def regex(pattern: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"field `{field}`: pattern {pattern!r} is not a regular expression: {exc}"
        ) from None


def bound(raw: Any, key: str, field: str) -> tuple[str, Any]:
    """The kind a `min`/`max` compares in (decimal, date or datetime) and the bound in it."""
    if isinstance(raw, bool):
        raise ConfigError(f"field `{field}`: `{key}: {raw}` is neither a number nor a date")
    if isinstance(raw, dt.datetime):
        return "datetime", raw
    if isinstance(raw, dt.date):
        return "date", raw
    for kind in ("decimal", "date", "datetime"):
        try:
            return kind, casts.convert(raw, kind)
        except (ValueError, ArithmeticError, TypeError):
            continue
    raise ConfigError(f"field `{field}`: `{key}: {raw!r}` is neither a number nor a date")


HOOK_GROUP = "mapsync.hooks"


def hook(spec: models.FieldRule, field: str) -> tuple[str, Callable[..., Any]]:
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


def _check(spec: models.FieldRule, key: str, field: str) -> None:
    """The ConfigError the rule `key` would raise when it compiles (none if it is not set)."""
    if key == "template" and spec.template is not None:
        template_names(spec.template, field)
    elif key == "timezone" and spec.timezone is not None:
        zone(spec.timezone.source, field)
        if spec.timezone.target != "aware":
            zone(spec.timezone.target, field)
    elif key == "python" and spec.python is not None:
        hook(spec, field)
    elif key == "pattern" and spec.pattern is not None:
        regex(spec.pattern, field)
    elif key in ("min", "max"):
        raw = spec.min if key == "min" else spec.max
        if raw is not None:
            bound(raw, key, field)


def sheet_problems(spec: models.FieldRule, field: str) -> list[tuple[str, str]]:
    """Config errors of the rules that need no catalog, as (sheet key, message)."""
    problems = []
    for key in ("template", "timezone", "python", "pattern", "min", "max"):
        try:
            _check(spec, key, field)
        except ConfigError as exc:
            problems.append((key, str(exc)))
    return problems
