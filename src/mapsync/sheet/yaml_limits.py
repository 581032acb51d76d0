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
MAX_VALUES = 250_000  # keys and values that aliases add to the sheet, all expanded
MAX_DEPTH = 64  # mappings and lists inside each other


class RecordAliases(yaml.SafeLoader):
    """SafeLoader that remembers where each alias stands (a composed graph forgets it)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            if node is not None:
                self.__dict__.setdefault("_alias_uses", []).append((mark, node))
            return node
        return super().compose_node(parent, index)

    def alias_uses(self) -> list[tuple[yaml.Mark, yaml.Node]]:
        """Where each alias stood, and the node it stands for, in document order."""
        uses: list[tuple[yaml.Mark, yaml.Node]] = self.__dict__.get("_alias_uses", [])
        return uses


def check_size(size: int, source: str) -> None:
    if size > MAX_BYTES:
        raise errors.ConfigError(
            f"{source}: the sheet is larger than the limit of {MAX_BYTES:,} bytes; "
            "keep large value maps in `map_from` files"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_CAP = 10**15  # sizes past any limit stay small integers


def check(root: yaml.Node, aliases: list[tuple[yaml.Mark, yaml.Node]], source: str) -> None:
    """Refuse a graph that refers to itself, nests deeper than MAX_DEPTH, or whose aliases add
    more than MAX_VALUES values; ConfigError with `file:line`. Without aliases the document is a
    tree, bounded by the file size: nothing to do."""
    if not aliases:
        return
    size: dict[int, int] = {}  # values under each collection, aliases expanded, once per node
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0  # values as written (a scalar reached through an alias counts as written)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            total, deepest = 1, 0
            for kid in _children(node):
                if isinstance(kid, yaml.ScalarNode):
                    total, deepest = total + 1, max(deepest, 1)
                else:
                    total, deepest = total + size[id(kid)], max(deepest, depth[id(kid)])
            size[key], depth[key] = min(_CAP, total), deepest + 1
            on_path.discard(key)
            if depth[key] > MAX_DEPTH:
                raise errors.ConfigError(
                    f"{source}:{node.start_mark.line + 1}: the sheet nests mappings and lists more "
                    f"than {MAX_DEPTH} deep (aliases expanded)"
                )
            continue
        if key in size or isinstance(node, yaml.ScalarNode):
            continue
        on_path.add(key)
        stack.append((node, True))
        distinct += 1
        for kid in _children(node):
            if isinstance(kid, yaml.ScalarNode):
                distinct += 1
            elif id(kid) in on_path:
                raise errors.ConfigError(f"{_alias_line(kid, aliases, source)}: {_cycle(kid)}")
            elif id(kid) not in size:
                stack.append((kid, False))
    if size.get(id(root), 1) - distinct > MAX_VALUES:
        mark, target = max(aliases, key=lambda use: size.get(id(use[1]), 1))
        raise errors.ConfigError(
            f"{source}:{mark.line + 1}: aliases add more than {MAX_VALUES:,} values to the sheet "
            f"(this alias alone repeats {_count(size.get(id(target), 1))} values); write the "
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
