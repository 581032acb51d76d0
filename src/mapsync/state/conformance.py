"""mypy checks that both state stores implement every port (`Store`, state/ports.py). Nothing
imports this module; it exists to be type-checked (the contract suite, tests/contract/, checks
that they behave alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapsync.state.memory import MemoryStore
    from mapsync.state.ports import Store
    from mapsync.state.store import StateStore

    def _implements(sql: StateStore, memory: MemoryStore) -> None:
        """Never called: the assignments are the check."""
        stores: tuple[Store, Store] = (sql, memory)
        del stores
