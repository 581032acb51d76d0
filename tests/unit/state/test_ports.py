"""`state/` owns every state query: no module outside it (the CLI included) reaches into the
store's engine or its tables."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import mapsync

SRC = Path(mapsync.__file__).parent


def _outside_state() -> list[Path]:
    out = []
    for path in SRC.rglob("*.py"):
        top = path.relative_to(SRC).parts[0]
        if top != "state":
            out.append(path)
    return out


def _parse(path: Path) -> ast.Module:
    """`ast.parse`, tried again on CPython 3.11's spurious "AST constructor recursion depth
    mismatch" (python/cpython#106905: the AST builder's depth counter is shared by the threads,
    and a thread left by another test may be compiling at the same moment)."""
    for _ in range(2):
        with contextlib.suppress(SystemError):
            return ast.parse(path.read_text(encoding="utf-8"))
    return ast.parse(path.read_text(encoding="utf-8"))


def test_no_store_engine_outside_state() -> None:
    found = []
    for path in _outside_state():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name == "store":
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_no_state_schema_import_outside_state() -> None:
    found = []
    for path in _outside_state():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.ImportFrom) and node.module == "mapsync.state":
                if any(a.name == "schema" for a in node.names):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                if "mapsync.state.schema" in names:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []
