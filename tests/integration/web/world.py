"""A small real world for the web tests: a SQLite → SQLite sync run in-process by the engine,
with a record the mapping rejects (its value holds a secret of the sheet), an unmapped value, and
the state store the dashboard reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from tests import helpers as h

SECRET = "Kanar1e-web-5ecret"
ENV = {"PW": SECRET}
SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
  spare: {{url: "postgresql://mapsync:${{PW}}@127.0.0.1:1/spare"}}
state: {{url: "{state}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields:
      name: {{from: name, map: {{one: ONE, two: TWO, three: THREE}}, on_unknown: reject}}
      qty: {{from: qty_text, cast: int}}
"""
EXPORT = """
  orders:
    from: {{connection: src, table: orders}}
    to: {{connection: dst, table: orders}}
    key: {{from: order_no, to: order_no}}
    fields: {{zip: zip}}
    changes: {{method: export_flag, flag: exported, status: erp_status, error: erp_error}}
"""
SRC = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), qty_text VARCHAR(60))"
DST = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), qty INTEGER)"


@dataclasses.dataclass
class World:
    loaded: LoadedSheet
    store: StateStore
    engine: Engine
    src: str
    dst: str

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def world(
    tmp_path: Path,
    make: Callable[[], str],
    state: str | None = None,
    *,
    export: bool = False,
    schedule: str = "",
) -> World:
    """Seeded, then a run that writes 3, rejects 4 (unmapped 'bogus') and 5 (qty holds the secret)."""
    src, dst = make(), make()
    state = state or make()
    h.execute(src, SRC)
    h.execute(dst, DST)
    h.execute(src, "INSERT INTO items VALUES (1, 'one', '1'), (2, 'two', '2')")
    # with `export`: an export sync too (never run: what the web shows of it comes from the store)
    # with `schedule`: the items sync's schedule (YAML flow text)
    text = SHEET + EXPORT if export else SHEET
    if schedule:
        text = text.replace("{{method: full}}\n", "{{method: full}}\n    schedule: {{" + schedule + "}}\n", 1)
    (tmp_path / "sheet.yaml").write_text(text.format(src=src, dst=dst, state=state))
    loaded = loader.load(tmp_path / "sheet.yaml", env=ENV)
    store = StateStore.open(state, tmp_path, create=True)
    engine = Engine(loaded, store)
    assert engine.run("items", "seed").ok
    h.execute(
        src,
        "INSERT INTO items VALUES (3, 'three', '3'), (4, 'bogus', '4'), (5, 'two', 'Y" + SECRET + "')",
    )
    engine.run("items")
    return World(loaded, store, engine, src, dst)
