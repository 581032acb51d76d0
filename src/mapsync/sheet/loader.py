"""Load a mapping sheet: YAML with line numbers, ${VAR} interpolation, every error at once."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mapsync import errors
from mapsync.sheet import models

Path_ = tuple[str | int, ...]

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


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
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
) -> Any:
    """Turn a composed node tree into plain data, recording the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            out[key] = _walk(value_node, (*path, key), lines, problems, secrets, source, env)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, (*path, i), lines, problems, secrets, source, env)
            for i, item in enumerate(node.value)
        ]
    value = _Loader(str(node.value)).construct_object(node)  # type: ignore[no-untyped-call]
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
    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if env.get(name):
            secrets.append(env[name])
            return env[name]
        if fallback is None:
            problems.append(f"{source}:{line}: {_dotted(path)}: environment variable {name} is not set")
            return ""
        return fallback

    return _VAR.sub(replace, text)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def _inner_model(annotation: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        return _DictOf(typing.get_args(annotation)[1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


class _DictOf:
    """Placeholder while walking a path through `dict[str, Model]`."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _suggest(path: Path_) -> str:
    parent: Any = models.Sheet
    for part in path[:-1]:
        if isinstance(parent, _DictOf):
            parent = _inner_model(parent.value) if not isinstance(part, int) else None
            continue
        if parent is None or not (isinstance(parent, type) and issubclass(parent, BaseModel)):
            return ""
        fields = {f.alias or n: f for n, f in parent.model_fields.items()}
        if part not in fields:
            # a discriminated union member, e.g. changes → method-specific model
            return ""
        parent = _union_or_inner(fields[part].annotation, path)
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return ""
    names = [f.alias or n for n, f in parent.model_fields.items()]
    close = difflib.get_close_matches(str(path[-1]), names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _union_or_inner(annotation: Any, path: Path_) -> Any:
    import typing

    inner = _inner_model(annotation)
    if inner is not None:
        return inner
    args = [a for a in typing.get_args(annotation) if isinstance(a, type)]
    for arg in typing.get_args(annotation):
        args.extend(a for a in typing.get_args(arg) if isinstance(a, type))
    models_ = [a for a in args if issubclass(a, BaseModel)]
    return models_[0] if len(models_) == 1 else None


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
        return f"unknown method '{tag}' (expected {expected})"
    if kind == "union_tag_not_found":
        return f"'{err.get('ctx', {}).get('discriminator', 'kind').strip(chr(39))}' is required"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def load(path: str | Path, env: dict[str, str] | None = None) -> LoadedSheet:
    """Read, interpolate and validate a sheet; raise ConfigError listing every problem."""
    sheet_path = Path(path)
    source = str(sheet_path)
    try:
        text = sheet_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"{source}: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=_Loader)  # type: ignore[arg-type]
        if node is not None:
            _Loader(text).construct_document(node)  # runs the duplicate-key check
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise errors.ConfigError(f"{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{source}: invalid YAML: {exc}") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise errors.ConfigError(
            f"{source}:1: the sheet must be a mapping with `version`, `connections` and `syncs`"
        )

    lines: dict[Path_, int] = {}
    problems: list[str] = []
    secrets: list[str] = []
    data = _walk(node, (), lines, problems, secrets, source, dict(os.environ if env is None else env))

    def line_of(p: Path_) -> int:
        while p and p not in lines:
            p = p[:-1]
        return lines.get(p, 1)

    sheet: models.Sheet | None = None
    try:
        sheet = models.Sheet.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            p = _clean_loc(err["loc"])
            problems.append(f"{source}:{line_of(p)}: {_dotted(p)}: {_message(err, p)}")
    if sheet is not None:
        problems.extend(f"{source}:{line_of(p)}: {_dotted(p)}: {msg}" for p, msg in cross_check(sheet))
    if problems:
        raise errors.ConfigError(
            f"{source}: {len(problems)} problem(s)", sorted(set(problems), key=_line_key)
        )
    assert sheet is not None
    return LoadedSheet(sheet, sheet_path.resolve(), lines, tuple(s for s in secrets if len(s) >= 3))


def _line_key(problem: str) -> tuple[int, str]:
    try:
        return int(problem.split(":")[1]), problem
    except (IndexError, ValueError):
        return 0, problem


def _clean_loc(loc: tuple[Any, ...]) -> Path_:
    out: list[str | int] = []
    for i, part in enumerate(loc):
        # discriminated unions add the tag (`watermark`, `sql`) after the field name
        if i > 0 and loc[i - 1] in ("changes",) and part in ("watermark", "full"):
            continue
        if i > 1 and loc[i - 2] == "connections" and part == "sql":
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def cross_check(sheet: models.Sheet) -> list[tuple[Path_, str]]:
    """Checks across sections that a single model cannot make."""
    found: list[tuple[Path_, str]] = []
    names = set(sheet.connections)
    for sync_name, sync in sheet.syncs.items():
        base: Path_ = ("syncs", sync_name)
        for role, ref in (("from", sync.from_), ("to", sync.to)):
            if ref.connection not in names:
                found.append(((*base, role, "connection"), _unknown("connection", ref.connection, names)))
        for dep in sync.after:
            if dep not in sheet.syncs:
                found.append(((*base, "after"), _unknown("sync", dep, set(sheet.syncs))))
        key_fields = set(sync.key.to)
        for field in sync.fields:
            if field in key_fields:
                found.append(((*base, "fields", field), "is a key column: it is filled from `key`"))
        for child_name, child in sync.children.items():
            cbase = (*base, "children", child_name)
            if child.from_.connection != sync.from_.connection:
                found.append(((*cbase, "from", "connection"), "must be the parent's source connection"))
            if child.to.connection != sync.to.connection:
                found.append(((*cbase, "to", "connection"), "must be the parent's destination connection"))
            if len(child.parent.from_) != len(sync.key.from_) or len(child.parent.to) != len(sync.key.to):
                found.append(((*cbase, "parent"), "must name as many columns as the parent's key"))
        if sync.deletes.policy == "disable" and sync.deletes.field in key_fields:
            found.append(((*base, "deletes", "field"), "cannot be a key column"))
    cycle = _cycle(sheet)
    if cycle:
        found.append((("syncs", cycle[0], "after"), "cycle: " + " → ".join(cycle)))
    return found


def _unknown(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    return f"unknown {what} '{name}'{hint}"


def _cycle(sheet: models.Sheet) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        stack.append(name)
        for dep in sheet.syncs[name].after:
            if dep not in sheet.syncs:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return []

    for name in sheet.syncs:
        if name not in state and (found := visit(name)):
            return found
    return []


def run_order(sheet: models.Sheet) -> list[str]:
    """Sync names in sheet order, each after the syncs it names in `after`."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in sheet.syncs[name].after:
            visit(dep)
        done.append(name)

    for name in sheet.syncs:
        visit(name)
    return done
