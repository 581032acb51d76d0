"""Load a mapping sheet: YAML with line numbers, ${VAR} interpolation, every error at once."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mapsync import errors
from mapsync.redact import redact
from mapsync.sheet import (
    alert_models,
    checks,
    connection_models,
    map_files,
    messages,
    models,
    web_models,
    yaml_limits,
)

Path_ = tuple[str | int, ...]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclasses.dataclass(frozen=True)
class LoadedSheet:
    """A validated sheet and where it came from (relative paths resolve against `folder`)."""

    sheet: models.Sheet
    path: Path
    lines: dict[Path_, int]
    secrets: tuple[str, ...]  # values that came from ${VAR}: redact them wherever text is shown

    @property
    def folder(self) -> Path:
        return self.path.parent

    def where(self, *loc: str | int) -> str:
        """`file:line` of the nearest known place of a dotted path, for messages."""
        path: Path_ = tuple(loc)
        while path and path not in self.lines:
            path = path[:-1]
        line = self.lines.get(path)
        return f"{self.path}:{line}" if line else str(self.path)


class _Loader(yaml_limits.RecordAliases):
    """SafeLoader that refuses duplicate keys (and remembers where aliases stand)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _walk(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    problems: list[str],
    secrets: list[str],
    source: str,
    env: dict[str, str],
    columns: dict[Path_, int],
) -> Any:
    """Turn a composed node tree into plain data, recording the line and column of every path."""
    lines[path] = node.start_mark.line + 1
    columns[path] = node.start_mark.column + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            out[key] = _walk(value_node, (*path, key), lines, problems, secrets, source, env, columns)
            lines[(*path, key)] = key_node.start_mark.line + 1
            columns[(*path, key)] = key_node.start_mark.column + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, (*path, i), lines, problems, secrets, source, env, columns)
            for i, item in enumerate(node.value)
        ]
    value = _Loader(str(node.value)).construct_object(node)
    if isinstance(value, str) and "${" in value:
        return _interpolate(value, path, node.start_mark.line + 1, problems, secrets, source, env)
    return value


def _interpolate(
    text: str,
    path: Path_,
    line: int,
    problems: list[str],
    secrets: list[str],
    source: str,
    env: dict[str, str],
) -> str:
    userinfo = _userinfo_span(text)

    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if env.get(name):
            secrets.append(env[name])
            if userinfo and userinfo[0] <= match.start() and match.end() <= userinfo[1]:
                # inside `user:password@` of a URL: encoded, so `@ : / # %` cannot split it
                return urllib.parse.quote(env[name], safe="")
            return env[name]
        if fallback is None:
            problems.append(f"{source}:{line}: {_dotted(path)}: environment variable {name} is not set")
            return ""
        return fallback

    return _VAR.sub(replace, text)


def _userinfo_span(text: str) -> tuple[int, int] | None:
    """Where the `user:password` part of a URL written in the sheet lies (`scheme://…@`), with
    `${VAR}` references as written; None when the text is no URL or has no userinfo."""
    scheme = _SCHEME.match(text)
    if not scheme:
        return None
    start = end = scheme.end()
    while end < len(text) and text[end] not in "/?#":
        var = _VAR.match(text, end)
        end = var.end() if var else end + 1
    at = text.rfind("@", start, end)
    return (start, at) if at >= 0 else None


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top)"


class _DictOf:
    """Placeholder while walking a path through `dict[str, Model]`."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _models_of(annotation: Any) -> list[Any]:
    """The models (or `_DictOf`) an annotation can hold, looking through Annotated and unions."""
    import typing

    if typing.get_origin(annotation) is dict:
        return [_DictOf(typing.get_args(annotation)[1])]
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    found: list[Any] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_of(arg))
    return found


def _suggest(path: Path_) -> str:
    # every model the path may lead to: all members of a union (e.g. each `changes` method)
    here: list[Any] = [models.Sheet]
    for part in path[:-1]:
        step: list[Any] = []
        for item in here:
            if isinstance(item, _DictOf):
                if not isinstance(part, int):
                    step.extend(_models_of(item.value))
            elif isinstance(item, type) and issubclass(item, BaseModel):
                fields = {f.alias or n: f for n, f in item.model_fields.items()}
                if part in fields:
                    step.extend(_models_of(fields[part].annotation))
        here = step
    names = sorted(
        {
            f.alias or n
            for m in here
            if isinstance(m, type) and issubclass(m, BaseModel)
            for n, f in m.model_fields.items()
        }
    )
    # a key another member of a union knows (`url` under `kind: rest`) is no suggestion for itself
    close = difflib.get_close_matches(str(path[-1]), [n for n in names if n != path[-1]], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _message(err: Any, path: Path_) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{path[-1]}'{_suggest(path)}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"unknown option {err['input']!r} (expected {expected})"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        expected = err.get("ctx", {}).get("expected_tags", "")
        discriminator = str(err.get("ctx", {}).get("discriminator", "method")).strip("'")
        return f"unknown {discriminator} '{tag}' (expected {expected})"
    if kind == "union_tag_not_found":
        return f"'{err.get('ctx', {}).get('discriminator', 'kind').strip(chr(39))}' is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_kind_of(err.get('input'))}"
    if kind == "too_short":
        least = err.get("ctx", {}).get("min_length", 1)
        return f"needs at least {least} {'entry' if least == 1 else 'entries'}"
    msg: str = err["msg"]
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if kind not in ("value_error", "assertion_error") and isinstance(value, str | int | float | bool):
        msg += f" (got {value!r})"
    return msg


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


def load(path: str | Path, env: dict[str, str] | None = None) -> LoadedSheet:
    """Read, interpolate and validate a sheet; raise ConfigError listing every problem."""
    sheet_path = Path(path)
    source = str(sheet_path)
    try:
        with sheet_path.open("rb") as handle:  # never more than the limit, whatever the file is
            raw = handle.read(yaml_limits.MAX_BYTES + 1)
        yaml_limits.check_size(len(raw), source)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"{source}: cannot read: {exc}") from None
    try:
        composer = _Loader(text)
        try:
            node = composer.get_single_node()
        finally:
            composer.dispose()
        if node is not None:
            # bounded before anything expands an alias (an alias bomb, an alias inside itself)
            yaml_limits.check(node, composer.alias_uses(), source)
            _Loader(text).construct_document(node)  # runs the duplicate-key check
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            started = exc.context_mark
            context = f" ({exc.context} that starts at line {started.line + 1}, column {started.column + 1})"
        hint = messages.yaml_hint(str(exc.problem or exc))
        message = f"invalid YAML: {exc.problem or exc}{context}" + (f". Hint: {hint}" if hint else "")
        detail = {
            "file": source,
            "line": mark.line + 1 if mark else None,
            "column": mark.column + 1 if mark else None,
            "path": None,
            "message": message,
        }
        raise errors.ConfigError(f"{where}: {message}", details=[detail]) from None
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise errors.ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise errors.ConfigError(
            f"{source}:1: the sheet must be a mapping with `version`, `connections` and `syncs`"
        )

    lines: dict[Path_, int] = {}
    problems: list[str] = []
    secrets: list[str] = []
    columns: dict[Path_, int] = {}
    environ = dict(os.environ if env is None else env)
    data = _walk(node, (), lines, problems, secrets, source, environ, columns)

    def line_of(p: Path_) -> int:
        while p and p not in lines:
            p = p[:-1]
        return lines.get(p, 1)

    sheet: models.Sheet | None = None
    try:
        sheet = models.Sheet.model_validate(data)
    except ValidationError as exc:
        plain, unions = messages.merge_unions(exc.errors())  # one message per union, not per member
        for err in plain:
            p = _clean_loc(err["loc"])
            problems.append(f"{source}:{line_of(p)}: {_dotted(p)}: {_message(err, p)}")
        for loc, message in unions:
            p = _clean_loc(loc)
            problems.append(f"{source}:{line_of(p)}: {_dotted(p)}: {message}")
    # the cross checks run even on an invalid sheet (over what validates), so one run lists all
    found = checks.cross_check(sheet) if sheet is not None else checks.partial_cross_check(data)
    if sheet is not None:
        found += map_files.problems(sheet, sheet_path.resolve().parent)
    problems.extend(f"{source}:{line_of(p)}: {_dotted(p)}: {msg}" for p, msg in found)
    if problems:
        # a value that came from ${VAR} never reaches a message (it may be a secret)
        shown = sorted({_redact(p, secrets) for p in problems}, key=_line_key)
        details = [_detail(p, source, columns) for p in shown]
        raise errors.ConfigError(f"{source}: {len(shown)} problem(s)", shown, details)
    assert sheet is not None
    secrets.extend(connection_models.secrets_of(sheet.connections.values()))  # even if written inline
    secrets.extend(alert_models.secrets_of(sheet.alerts))  # SMTP passwords, webhook URLs
    secrets.extend(web_models.secrets_of(sheet.web))  # dashboard tokens and password hashes
    return LoadedSheet(sheet, sheet_path.resolve(), lines, tuple(s for s in secrets if len(s) >= 3))


_PROBLEM = re.compile(r"(\d+): ([^\s:]+): (.*)", re.DOTALL)


def _detail(problem: str, source: str, columns: dict[Path_, int]) -> dict[str, Any]:
    """A problem line `FILE:LINE: PATH: MESSAGE` as an object (for `validate --json`)."""
    found = _PROBLEM.fullmatch(problem[len(source) + 1 :]) if problem.startswith(f"{source}:") else None
    if found is None:
        return {"file": source, "line": None, "column": None, "path": None, "message": problem}
    line, dotted, message = found.groups()
    loc: Path_ = tuple(int(p) if p.isdigit() else p for p in dotted.split("."))
    while loc and loc not in columns:
        loc = loc[:-1]
    column = columns.get(loc) if dotted != "(top)" else None
    return {"file": source, "line": int(line), "column": column, "path": dotted, "message": message}


def _line_key(problem: str) -> tuple[int, str]:
    try:
        return int(problem.split(":")[1]), problem
    except (IndexError, ValueError):
        return 0, problem


def _tags(union: Any, field: str) -> frozenset[str]:
    """The discriminator values of an `Annotated[A | B | …, Field(discriminator=field)]`."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(typing.get_args(m.model_fields[field].annotation)[0] for m in members)


_METHODS = _tags(models.Changes, "method")


def _clean_loc(loc: tuple[Any, ...]) -> Path_:
    out: list[str | int] = []
    for i, part in enumerate(loc):
        # discriminated unions add the tag (`watermark`, `sql`) after the field name
        if i > 0 and loc[i - 1] in ("changes",) and part in _METHODS:
            continue
        if i > 1 and loc[i - 2] == "connections" and part in ("sql", "rest", "cimcloud"):
            continue
        if i > 0 and loc[i - 1] == "auth" and part in ("bearer", "basic", "api_key", "token"):
            continue
        if i > 0 and loc[i - 1] == "deletes_every" and part in ("duration", "cron"):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _redact(text: str, secrets: list[str]) -> str:
    return redact(text, secrets)
