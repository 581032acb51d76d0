"""The capture cursors of each sync (watermark, seed position, an export's starting point …),
with an audit row for every value that changes: a mixin of `StateStore`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync.state import schema, values
from mapsync.state.clock import stamp
from mapsync.state.faults import guarded


class CursorsMixin:
    engine: sa.Engine
    dialect: str

    def _upsert(self, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> Any:
        ins: Any = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
        update = {c.name: ins.excluded[c.name] for c in table.columns if c.name not in keys}
        return ins.on_conflict_do_update(index_elements=list(keys), set_=update)

    @guarded
    def cursor(self, sync: str, name: str) -> Any:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(schema.cursors.c.value).where(
                    schema.cursors.c.sync == sync, schema.cursors.c.name == name
                )
            ).scalar()
        return values.decode(text)

    @guarded
    def cursors(self, sync: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(schema.cursors.c.name, schema.cursors.c.value).where(schema.cursors.c.sync == sync)
            ).all()
        return {name: values.decode(text) for name, text in rows}

    def _set_cursors(self, conn: sa.Connection, sync: str, run_id: int | None, new: dict[str, Any]) -> None:
        if not new:
            return
        old = dict(
            conn.execute(
                sa.select(schema.cursors.c.name, schema.cursors.c.value).where(
                    schema.cursors.c.sync == sync, schema.cursors.c.name.in_(list(new))
                )
            ).all()
        )
        now = stamp()
        rows, audit = [], []
        for name, value in new.items():
            text = values.encode(value) if value is not None else None
            if old.get(name) == text:
                continue
            rows.append({"sync": sync, "name": name, "value": text, "updated_at": now})
            audit.append(
                {
                    "sync": sync,
                    "run_id": run_id,
                    "name": name,
                    "old_value": old.get(name),
                    "new_value": text,
                    "committed_at": now,
                }
            )
        if rows:
            conn.execute(self._upsert(schema.cursors, rows, ("sync", "name")), rows)
            conn.execute(sa.insert(schema.cursor_audit), audit)

    @guarded
    def set_cursors(self, sync: str, new: dict[str, Any], run_id: int | None = None) -> None:
        with self.engine.begin() as conn:
            self._set_cursors(conn, sync, run_id, new)
