"""Bounds on what a sheet's YAML may cost before it is turned into data.

YAML aliases (`*name`) repeat an anchored value without copying it, so a few hundred bytes of
nested aliases expand to billions of values (the "billion laughs"), and an alias used inside the
value it names never ends. The composed node graph itself stays small; the cost comes when it is
expanded. `check` measures the expanded size and depth of that graph once, in time linear in
its distinct nodes, and refuses a sheet that passes a limit, naming the alias at fault by line.
"""

from __future__ import annotations

from typing import Any

import yaml

from mapsync import errors

MAX_BYTES = 2_000_000  # a sheet file; large value maps belong in `map_from` files
MAX_VALUES = 250_000  # keys and values of the whole sheet, every alias expanded
MAX_DEPTH = 64  # mappings and lists inside each other


class RecordAliases(yaml.SafeLoader):
    """SafeLoader that remembers where each alias stands (a composed graph forgets it)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            if node is not None:
                self.__dict__.setdefault("alias_uses", []).append((mark, node))
            return node
        return super().compose_node(parent, index)


def check_size(size: int, source: str) -> None:
    if size > MAX_BYTES:
        raise errors.ConfigError(
            f"{source}: the sheet is {size:,} bytes, more than the limit of {MAX_BYTES:,}; "
            "keep large value maps in `map_from` files"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check(root: yaml.Node, aliases: list[tuple[yaml.Mark, yaml.Node]], source: str) -> None:
    """Refuse a graph that refers to itself, nests deeper than MAX_DEPTH or expands to more
    than MAX_VALUES values; ConfigError with `file:line`."""
    size: dict[int, int] = {}  # expanded values under each node (capped), once per node
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = min(MAX_VALUES + 1, 1 + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if depth[key] > MAX_DEPTH:
                raise errors.ConfigError(
                    f"{source}:{node.start_mark.line + 1}: the sheet nests mappings and lists more "
                    f"than {MAX_DEPTH} deep (aliases expanded)"
                )
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise errors.ConfigError(f"{_alias_line(kid, aliases, source)}: {_cycle(kid)}")
            if id(kid) not in size:
                stack.append((kid, False))
    if size[id(root)] > MAX_VALUES:
        if not aliases:
            raise errors.ConfigError(f"{source}: the sheet holds more than {MAX_VALUES:,} values")
        mark, target = max(aliases, key=lambda use: size.get(id(use[1]), 0))
        raise errors.ConfigError(
            f"{source}:{mark.line + 1}: aliases expand the sheet to more than {MAX_VALUES:,} "
            f"values (this alias alone repeats {_count(size[id(target)])} values); write the "
            "values out or use fewer nested aliases"
        )


def _count(n: int) -> str:
    return f"more than {MAX_VALUES:,}" if n > MAX_VALUES else f"{n:,}"


def _cycle(target: yaml.Node) -> str:
    return (
        f"an alias refers to the value it stands in (anchored on line {target.start_mark.line + 1}): "
        "it would repeat forever"
    )


def _alias_line(target: yaml.Node, aliases: list[tuple[yaml.Mark, yaml.Node]], source: str) -> str:
    """The alias to `target` written inside `target` itself."""
    start, end = target.start_mark.index, target.end_mark.index
    inside = [m for m, n in aliases if n is target and start <= m.index <= end]
    mark = inside[0] if inside else target.start_mark
    return f"{source}:{mark.line + 1}"
