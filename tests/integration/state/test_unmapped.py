"""Unmapped values: collected per distinct value with a first-seen warning, listed with near
misses by `mapsync unmapped`, and re-sent by `mapsync retry` once the sheet maps them (without
moving the watermark). Source and destination on every backend; the v1 → v2 state migration."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import records
from mapsync.engine import Engine, RunReport
from mapsync.sheet import loader
from mapsync.state import report, schema, unmapped, values
from mapsync.state.store import StateStore, stamp
from tests import helpers as h

T1, T2, T3 = "2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00"

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: src, table: customers}}
    to: {{connection: dst, table: customers}}
    key: {{from: id, to: id}}
    fields:
      name: name
      country: {country_rule}
    changes: {{method: watermark, column: last_modified, lag: {lag}}}
    delivery: {{batch: 4}}
"""
PLAIN = "{from: country, country: iso3}"
FIXED = (
    '{from: country, map: {"Untied States": "United States", "Deutschlnd": "Germany"}, '
    "on_unknown: keep, country: iso3}"
)


class Alerts(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "unmapped_value_new":
            self.seen.append({k: getattr(record, k) for k in ("sync", "field", "rule", "value")})


@pytest.fixture
def alerts() -> Iterator[Alerts]:
    handler = Alerts()
    logger = logging.getLogger("mapsync.engine")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


class World:
    def __init__(self, database: Callable[[], str], folder: Path) -> None:
        self.src, self.dst, self.folder = database(), database(), folder
        ts = h.TS[h.dialect(self.src)]
        h.execute(
            self.src,
            f"CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), country VARCHAR(50), "
            f"last_modified {ts})",
        )
        h.execute(
            self.dst, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), country CHAR(3))"
        )
        h.install_write_counter(self.dst, "customers")

    def sheet(self, country_rule: str = PLAIN, lag: str = "0s") -> None:
        text = SHEET.format(src=self.src, dst=self.dst, country_rule=country_rule, lag=lag)
        (self.folder / "sheet.yaml").write_text(text)

    def add(self, *rows: tuple[int, str, str], at: str) -> None:
        h.execute(
            self.src,
            "INSERT INTO customers (id, name, country, last_modified) VALUES (:i, :n, :c, :t)",
            params=[{"i": i, "n": n, "c": c, "t": at} for i, n, c in rows],
        )

    def engine(self, kind: str) -> RunReport:
        loaded = loader.load(self.folder / "sheet.yaml")
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
        engine = Engine(loaded, store)
        try:
            return engine.run("customers", kind)
        finally:
            engine.close()
            store.close()

    def cli(self, *args: str) -> tuple[int, Any]:
        done = h.mapsync(*args[:1], "sheet.yaml", *args[1:], "--json", cwd=self.folder)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        return done.returncode, json.loads(done.stdout)

    def store(self) -> StateStore:
        return StateStore.open("sqlite:///.mapsync/state.db", self.folder, create=False)

    def state(self) -> dict[str, Any]:
        store = self.store()
        try:
            with store.engine.connect() as conn:
                audit = conn.execute(sa.select(sa.func.count()).select_from(schema.cursor_audit)).scalar_one()
                values_ = unmapped.listing(conn, "customers", include_resolved=True)
            return {
                "watermark": store.cursors("customers")["watermark"],
                "audit": audit,
                "open_errors": sorted(
                    tuple(values.decode(r["key"]))
                    for r in report.record_errors(store, "customers", False, 100)
                ),
                "unmapped": {v["value"]: v for v in values_},
                "runs": [(r["kind"], r["status"]) for r in reversed(report.runs(store, "customers", 100))],
            }
        finally:
            store.close()

    def dest(self) -> dict[int, tuple[str, str]]:
        return {i: (n, c) for i, n, c in h.query(self.dst, "SELECT id, name, country FROM customers")}


@pytest.fixture
def world(database: Callable[[], str], tmp_path: Path) -> World:
    w = World(database, tmp_path)
    w.add((1, "Ann", "USA"), (2, "Bob", "Germany"), (3, "Cy", "France"), at=T1)
    w.sheet(lag="400d")  # the seed's cursor lies before T1; later runs read what changed after it
    assert w.engine("seed").status == "success"
    w.sheet()
    assert w.engine("run").status == "success"
    return w


def test_unknown_country_variants_are_listed_then_retried_after_the_sheet_maps_them(
    world: World, alerts: Alerts
) -> None:
    w = world
    w.add(
        (4, "Dee", "Untied States"),
        (5, "Eve", "Deutschlnd"),
        (6, "Fay", "Italy"),
        (7, "Gus", "Untied States"),
        (8, "Hal", "Deutschlnd"),
        (9, "Ivy", "Untied States"),
        at=T2,
    )
    out = w.engine("run")
    assert out.status == "partial"
    assert (out.counts.written, out.counts.rejected) == (1, 5)
    assert {s.value for s in out.samples} == {"Untied States", "Deutschlnd"}
    assert sorted(a["value"] for a in alerts.seen) == ["Deutschlnd", "Untied States"]
    assert {(a["sync"], a["field"], a["rule"]) for a in alerts.seen} == {("customers", "country", "country")}

    # the same value again: no second alert, and a record re-read while still blocked by the
    # same value is not counted again (`count` is the number of records it blocked)
    h.execute(w.src, "UPDATE customers SET name = 'Dee 2', last_modified = :t WHERE id = 4", params={"t": T3})
    second = w.engine("run")  # reads row 4 and the rows at the stored watermark again
    assert (4,) in {s.key for s in second.samples}
    assert len(alerts.seen) == 2
    seen = {"Untied States": 3, "Deutschlnd": 2}
    assert seen == {v: len({s.key for s in out.samples + second.samples if s.value == v}) for v in seen}

    code, listed = w.cli("unmapped")
    assert code == 1
    by_value = {row["value"]: row for row in listed}
    assert set(by_value) == {"Untied States", "Deutschlnd"}
    assert {v: row["count"] for v, row in by_value.items()} == seen
    assert by_value["Untied States"]["suggestions"][0] == "United States"
    assert by_value["Deutschlnd"]["suggestions"][0] == "Germany"
    assert by_value["Deutschlnd"]["snippet"].startswith('map: {"Deutschlnd": "Germany"}, on_unknown: keep')
    assert all(row["field"] == "country" and row["rule"] == "country" for row in listed)

    before = w.state()
    assert before["open_errors"] == [(4,), (5,), (7,), (8,), (9,)]
    assert set(w.dest()) == {1, 2, 3, 6}

    # retrying only another field's errors sends nothing
    code, (nothing,) = w.cli("retry", "--field", "name")
    assert (code, nothing["counts"]["read"]) == (0, 0)

    w.sheet(FIXED)
    h.execute(w.src, "UPDATE customers SET name = 'Hal 2' WHERE id = 8")  # retry reads the current row
    writes = h.writes(w.dst)
    code, (retried,) = w.cli("retry")
    assert code == 0, retried
    assert (retried["kind"], retried["status"]) == ("retry", "success")
    assert retried["counts"]["written"] == 5 and retried["counts"]["rejected"] == 0
    assert h.writes(w.dst) - writes == 5  # exactly the rejected records
    assert w.dest() == {
        1: ("Ann", "USA"),
        2: ("Bob", "DEU"),
        3: ("Cy", "FRA"),
        4: ("Dee 2", "USA"),
        5: ("Eve", "DEU"),
        6: ("Fay", "ITA"),
        7: ("Gus", "USA"),
        8: ("Hal 2", "DEU"),
        9: ("Ivy", "USA"),
    }
    after = w.state()
    assert after["open_errors"] == []
    assert all(v["resolved_at"] is not None for v in after["unmapped"].values())
    assert (after["watermark"], after["audit"]) == (before["watermark"], before["audit"])
    assert after["runs"][-1] == ("retry", "success")
    assert w.cli("unmapped") == (0, [])

    # delivered records are in the ledger: the next run skips them as unchanged
    again = w.engine("run")
    assert (again.status, again.counts.written) == ("success", 0)


def test_retry_reports_keys_whose_source_row_is_gone(world: World) -> None:
    w = world
    w.add((4, "Dee", "Untied States"), (5, "Eve", "Untied States"), at=T2)
    assert w.engine("run").counts.rejected == 2
    h.execute(w.src, "DELETE FROM customers WHERE id = 5")
    w.sheet(FIXED)
    code, (retried,) = w.cli("retry")
    assert code == 1
    assert (retried["status"], retried["counts"]["written"], retried["gone"]) == ("partial", 1, [{"id": 5}])
    state = w.state()
    assert state["open_errors"] == [(5,)]
    store = w.store()
    try:
        (err,) = report.record_errors(store, "customers", False, 10)
    finally:
        store.close()
    assert err["message"].startswith(unmapped.GONE)
    assert state["unmapped"]["Untied States"]["resolved_at"] is None  # key 5 still carries it


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("pg_database")()
    return url


def test_a_v1_state_store_upgrades_in_place_to_v2(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    e, m = schema.record_errors, schema.meta
    with store.engine.begin() as conn:  # back to the v1 shape, holding one open error
        conn.execute(sa.text("DROP TABLE mapsync_unmapped"))
        conn.execute(sa.text('ALTER TABLE mapsync_record_errors DROP COLUMN "value"'))
        conn.execute(sa.update(m).where(m.c.name == "schema_version").values(value="1"))
        conn.execute(
            sa.text(
                "INSERT INTO mapsync_record_errors (sync, key, field, rule, message, attempts, first_seen, "
                "last_seen) VALUES ('c', '[1]', 'country', 'country', 'old', 1, 'x', 'x')"
            )
        )
    store.close()

    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        with store.engine.begin() as conn:
            assert conn.execute(sa.select(m.c.value).where(m.c.name == "schema_version")).scalar() == str(
                schema.SCHEMA_VERSION
            )
            assert sa.inspect(conn).has_table("mapsync_unmapped")
            assert conn.execute(sa.select(e.c.key, e.c.message, e.c.value)).all() == [("[1]", "old", None)]
            rejection = records.Rejection((1,), "no", "country", "country", None, "Atlantis")
            new = unmapped.record(conn, "c", [rejection, rejection], stamp())
            assert [(v["value"], v["count"]) for v in new] == [("Atlantis", 1)]  # one record
            assert unmapped.record(conn, "c", [rejection], stamp()) == []  # its open error: 'old'
            (row,) = unmapped.listing(conn, "c")
            assert (row["field"], row["rule"], row["value"], row["count"]) == (
                "country",
                "country",
                "Atlantis",
                2,
            )
    finally:
        store.close()
    StateStore.open(state_url, tmp_path, create=False).close()  # opening again changes nothing
