"""What monitors measured last (schema v7; port `Observations`), as `store.observations`: per sync
(`*` for the whole sheet) and name, the latest value (typed JSON) and when. `observe` returns the
values it replaces, so a monitor compares now with last time (a source whose newest change or row
count went backwards, as after a restore), and metrics read the latest (lag, backlog)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync.state import schema, values
from mapsync.state.clock import stamp, unstamp
from mapsync.state.faults import guarded

Seen = dict[tuple[str, str], tuple[Any, dt.datetime]]


class SqlObservations:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def observe(self, sync: str, measured: dict[str, Any]) -> dict[str, tuple[Any, dt.datetime]]:
        """Keep `measured` as `sync`'s latest values; the previous (value, time) of those names."""
        o, now = schema.observations, stamp()
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(o.c.name, o.c.value, o.c.observed_at).where(
                    o.c.sync == sync, o.c.name.in_(list(measured))
                )
            ).all()
            before = {name: (values.decode(value), unstamp(at)) for name, value, at in rows}
            for name, value in measured.items():
                row = {"value": values.encode(value), "observed_at": now}
                insert = (postgresql if self.engine.dialect.name == "postgresql" else sqlite).insert(o)
                conn.execute(
                    insert.values(sync=sync, name=name, **row).on_conflict_do_update(
                        index_elements=["sync", "name"], set_=row
                    )
                )
        return before

    @guarded
    def observations(self, sync: str | None = None) -> Seen:
        """(sync, name) → (latest value, when), of one sync or all."""
        o = schema.observations
        q = sa.select(o.c.sync, o.c.name, o.c.value, o.c.observed_at)
        if sync is not None:
            q = q.where(o.c.sync == sync)
        with self.engine.connect() as conn:
            return {(s, n): (values.decode(v), unstamp(at)) for s, n, v, at in conn.execute(q)}
