"""The in-memory store's observations (port `Observations`), as state/observations.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.state import values
from mapsync.state.clock import stamp, unstamp
from mapsync.state.memory_tables import Memory
from mapsync.state.observations import Seen


class MemoryObservations:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def observe(self, sync: str, measured: dict[str, Any]) -> dict[str, tuple[Any, dt.datetime]]:
        now = stamp()
        with self.memory.tx() as t:
            before = {
                name: (
                    values.decode(t.observations[(sync, name)][0]),
                    unstamp(t.observations[(sync, name)][1]),
                )
                for name in measured
                if (sync, name) in t.observations
            }
            for name, value in measured.items():
                t.observations[(sync, name)] = (values.encode(value), now)
        return before

    def observations(self, sync: str | None = None) -> Seen:
        with self.memory.read() as t:
            rows = dict(t.observations)
        return {
            (s, n): (values.decode(v), unstamp(at))
            for (s, n), (v, at) in rows.items()
            if sync is None or s == sync
        }
