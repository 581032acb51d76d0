"""One plain message for a value that fits no member of a union (`truncate: abc`).

Pydantic reports such a value once per member of the union, each under a location that ends in
the member's type (`…truncate.int`, `…truncate.literal['auto']`). `merge_unions` folds those
into one message at the field: "`truncate` must be a whole number or `auto`, got 'abc'".
"""

from __future__ import annotations

import re
from typing import Any

# how pydantic names a union member in a location
_TAG = re.compile(r"int|float|str|bool|none|decimal|date|datetime|timedelta|[a-z_-]+\[.*\]|[A-Z]\w*")
_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "decimal": "a number",
    "str": "text",
    "bool": "true or false",
    "none": "empty",
    "date": "a date",
    "datetime": "a date and time",
    "timedelta": "a duration",
}


def merge_unions(errors: list[Any]) -> tuple[list[Any], list[tuple[tuple[Any, ...], str]]]:
    """The errors that are not about a union member, and one (location, message) per union."""
    groups: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}
    for err in errors:
        at = _tag_at(err["loc"])
        if at is not None:
            groups.setdefault(tuple(err["loc"][:at]), []).append((err["loc"][at], err))
    merged: list[tuple[tuple[Any, ...], str]] = []
    folded: set[int] = set()
    for loc, members in groups.items():
        if len({tag for tag, _ in members}) < 2:
            continue  # one member only: its own message is clear enough
        folded.update(id(err) for _, err in members)
        alternatives = list(dict.fromkeys(_describe(tag) for tag, _ in members))
        value = members[0][1].get("input")
        merged.append((loc, f"`{loc[-1]}` must be {' or '.join(alternatives)}, got {_shown(value)}"))
    return [e for e in errors if id(e) not in folded], merged


def _tag_at(loc: tuple[Any, ...]) -> int | None:
    for i, part in enumerate(loc):
        if i > 0 and isinstance(part, str) and _TAG.fullmatch(part) and not part.startswith("function-"):
            return i
    return None


def _describe(tag: str) -> str:
    if tag in _WORDS:
        return _WORDS[tag]
    if tag.startswith("literal["):
        options = re.findall(r"'([^']*)'|(\d+)", tag)
        return " or ".join(f"`{a or b}`" for a, b in options) or tag
    if tag.startswith(("list[", "tuple[", "set[")):
        return "a list"
    if tag.startswith("dict[") or tag[:1].isupper():
        return "a mapping (key: value)"
    return tag


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


# PyYAML's wording of the common mistakes → what to look for, in plain words
_YAML_HINTS = (
    (
        "expected <block end>",
        "this line is indented differently from the keys above it: keys of one mapping start in "
        "the same column (the mistake may be on this line or the one before)",
    ),
    (
        "mapping values are not allowed here",
        "a `key: value` where a plain value was expected: this line is indented deeper than the "
        "key above it, or a value holding `: ` needs quotes",
    ),
    ("cannot start any token", "YAML is indented with spaces, never tabs"),
    ("expected ',' or '}'", "an inline `{…}` is not closed: add the `}` at the end of the line it starts on"),
    ("expected ',' or ']'", "an inline `[…]` is not closed: add the `]` at the end of the line it starts on"),
    (
        "could not find expected ':'",
        "a line without `key: value`: a missing colon, or a quote not closed on the line before",
    ),
    ("found unexpected end of stream", "a quote or bracket opened and never closed"),
)


def yaml_hint(problem: str) -> str:
    """A plain hint for a YAML syntax error, or ''."""
    for needle, hint in _YAML_HINTS:
        if needle in problem:
            return hint
    return ""
