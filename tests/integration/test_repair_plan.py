"""`Engine.repair` (repair_plan.py) on real databases (PostgreSQL -> MariaDB, SQLite -> SQLite):
a check's findings are planted by hand (a hand-edited destination row, a destination row
deleted, an extra row mapsync delivered once, an extra row it never delivered, a source row
deleted whose delete was never delivered), the CheckResult's lists are handed to the repair, and
a trigger logs every row written or deleted at the destination: exactly the planted rows are
touched, nothing else. Also: the mass-delete guard refuses a repair that deletes too much, the
`disable` policy disables instead of deleting, and `owns_table: true` deletes a foreign extra."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine import Engine, RunReport
from mapsync.reconcile.results import Extra
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields: {{nm: name}}
    changes: {{method: snapshot}}
    deletes: {deletes}
    owns_table: {owns}
"""
HARD = "{policy: hard, max_delete_ratio: 0.5}"
DISABLE = "{policy: disable, field: active, value: 0, max_delete_ratio: 0.5}"


def _write_log(url: str) -> None:
    """Log every insert, update and delete of `accounts` with the row's key."""
    d = h.dialect(url)
    if d == "postgresql":
        h.execute(
            url,
            "CREATE TABLE write_log (id SERIAL PRIMARY KEY, op TEXT, ref INTEGER)",
            "CREATE FUNCTION log_write() RETURNS trigger AS $$ BEGIN "
            "IF TG_OP = 'DELETE' THEN INSERT INTO write_log (op, ref) VALUES (TG_OP, OLD.ref); "
            "ELSE INSERT INTO write_log (op, ref) VALUES (TG_OP, NEW.ref); END IF; "
            "RETURN NULL; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON accounts "
            "FOR EACH ROW EXECUTE FUNCTION log_write()",
        )
        return
    auto = "INT AUTO_INCREMENT" if d == "mysql" else "INTEGER"
    h.execute(url, f"CREATE TABLE write_log (id {auto} PRIMARY KEY, op VARCHAR(10), ref INTEGER)")
    for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        body = f"INSERT INTO write_log (op, ref) VALUES ('{op}', {row}.ref)"
        if d == "mysql":
            h.execute(url, f"CREATE TRIGGER log_{op.lower()} AFTER {op} ON accounts FOR EACH ROW {body}")
        else:
            h.execute(url, f"CREATE TRIGGER log_{op.lower()} AFTER {op} ON accounts BEGIN {body}; END")


class World:
    """An ERP's customers 1..10, seeded into the portal's accounts."""

    def __init__(self, src: str, dst: str, folder: Path) -> None:
        self.src, self.dst, self.folder = src, dst, folder
        h.execute(src, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50))")
        rows = [{"id": i, "name": f"c{i}"} for i in range(1, 11)]
        h.execute(src, "INSERT INTO customers VALUES (:id, :name)", params=rows)
        h.execute(
            dst,
            "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), "
            "active INTEGER NOT NULL DEFAULT 1)",
        )
        self.store: StateStore | None = None
        self.engine: Engine | None = None

    def start(self, deletes: str = HARD, owns: bool = False) -> Engine:
        sheet = SHEET.format(src=self.src, dst=self.dst, deletes=deletes, owns=str(owns).lower())
        (self.folder / "sheet.yaml").write_text(sheet)
        self.store = StateStore.open("sqlite:///state.db", self.folder, create=True)
        self.engine = Engine(loader.load(self.folder / "sheet.yaml", env={}), self.store)
        report = self.engine.run("customers", "seed")
        assert report.status == "success" and report.counts.written == 10, report
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.store is not None:
            self.store.close()

    def accounts(self) -> dict[int, tuple[str, int]]:
        return {
            int(r[0]): (r[1], int(r[2])) for r in h.query(self.dst, "SELECT ref, nm, active FROM accounts")
        }

    def log(self) -> list[tuple[str, int]]:
        return sorted((str(r[0]), int(r[1])) for r in h.query(self.dst, "SELECT op, ref FROM write_log"))


@pytest.fixture(
    params=[
        pytest.param(
            ("pg_database", "mariadb_database"),
            id="pg-mariadb",
            marks=[pytest.mark.postgres, pytest.mark.mariadb],
        ),
        pytest.param(("sqlite_database", "sqlite_database"), id="sqlite-sqlite"),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    src_make: Callable[[], str] = request.getfixturevalue(request.param[0])
    dst_make: Callable[[], str] = request.getfixturevalue(request.param[1])
    w = World(src_make(), dst_make(), tmp_path)
    yield w
    w.close()


def repair(world: World, keys: list[str], extras: list[Extra], **options: Any) -> RunReport:
    _write_log(world.dst)  # from here on, every destination write is logged
    assert world.engine is not None
    return world.engine.repair("customers", keys, extras, **options)


def test_repair_touches_exactly_the_planted_rows(world: World) -> None:
    engine = world.start()
    h.execute(world.src, "DELETE FROM customers WHERE id = 4")
    assert engine.run("customers").counts.deleted == 1  # the ledger holds [4] deleted
    h.execute(
        world.dst,
        "INSERT INTO accounts (ref, nm) VALUES (4, 'c4')",  # an extra mapsync delivered once
        "INSERT INTO accounts (ref, nm) VALUES (99, 'someone else')",  # an extra never delivered
        "UPDATE accounts SET nm = 'edited by hand' WHERE ref = 2",  # changed
        "DELETE FROM accounts WHERE ref = 3",  # missing
    )
    h.execute(world.src, "DELETE FROM customers WHERE id = 5")  # its delete never delivered
    report = repair(world, ["[2]", "[3]", "[5]"], [Extra((4,), "[4]"), Extra((99,), None)])

    assert report.status == "success", report.message
    assert report.kind == "repair"
    assert world.log() == [("DELETE", 4), ("DELETE", 5), ("INSERT", 3), ("UPDATE", 2)]
    assert (report.counts.written, report.counts.deleted) == (2, 2)
    expected = {i: (f"c{i}", 1) for i in (1, 2, 3, 6, 7, 8, 9, 10)} | {99: ("someone else", 1)}
    assert world.accounts() == expected
    notes = "\n".join(report.notes)
    assert "1 extra destination row(s) not ours: left (99)" in notes
    assert "4 key(s) read at the source: 2 sent, 2 gone there" in notes
    assert world.store is not None
    ledger = world.store.ledger("customers", [(4,), (5,), (2,)])
    assert ledger[(4,)].deleted and ledger[(5,)].deleted and not ledger[(2,)].deleted
    runs = world.store.history.runs("customers", 10)
    assert runs[0]["kind"] == "repair" and runs[0]["status"] == "success"


def test_the_mass_delete_guard_refuses_a_repair_deleting_too_much(world: World) -> None:
    world.start(deletes=HARD.replace("0.5", "0.2"))
    h.execute(world.src, "DELETE FROM customers WHERE id IN (1, 2, 3)")
    h.execute(world.dst, "UPDATE accounts SET nm = 'edited' WHERE ref = 7")
    report = repair(world, ["[1]", "[2]", "[3]", "[7]"], [])

    assert report.status == "failed"
    assert report.message is not None
    assert "mass-delete guard" in report.message and "max_delete_ratio 0.2" in report.message
    assert "3 of 10 live row(s)" in report.message
    assert world.log() == []  # refused before anything was written
    assert len(world.accounts()) == 10
    assert world.engine is not None  # --force-deletes lets this one through
    forced = world.engine.repair("customers", ["[1]", "[2]", "[3]", "[7]"], [], force_deletes=True)
    assert forced.status == "success", forced.message
    assert world.log() == [("DELETE", 1), ("DELETE", 2), ("DELETE", 3), ("UPDATE", 7)]


def test_the_guard_counts_only_live_deletes_and_judges_extras_apart(world: World) -> None:
    engine = world.start(deletes=HARD.replace("0.5", "0.3"))
    h.execute(world.src, "DELETE FROM customers WHERE id = 4")
    assert engine.run("customers").counts.deleted == 1  # 9 live keys left: the ratio allows 2.7
    h.execute(world.dst, "INSERT INTO accounts (ref, nm) VALUES (4, 'c4')")  # delivered once: extra
    h.execute(world.src, "DELETE FROM customers WHERE id IN (1, 2)")
    # 2 live deletes + 1 extra: the extra is not a live key, it does not count against the ratio
    report = repair(world, ["[1]", "[2]"], [Extra((4,), "[4]")])
    assert report.status == "success", report.message
    assert world.log() == [("DELETE", 1), ("DELETE", 2), ("DELETE", 4)]


def test_many_extras_are_refused_under_their_own_message(world: World) -> None:
    world.start(owns=True, deletes=HARD.replace("0.5", "0.3"))
    h.execute(world.dst, *(f"INSERT INTO accounts (ref, nm) VALUES ({i}, 'stray')" for i in range(90, 94)))
    report = repair(world, [], [Extra((i,), None) for i in range(90, 94)])
    assert report.status == "failed" and report.message is not None
    assert "would delete 4 destination row(s) the key ledger does not hold live" in report.message
    assert "max_delete_ratio 0.3 of its 10 live row(s)" in report.message
    assert world.log() == [] and len(world.accounts()) == 14


def test_the_disable_policy_sets_the_field_instead_of_deleting(world: World) -> None:
    world.start(deletes=DISABLE)
    h.execute(world.src, "DELETE FROM customers WHERE id = 5")
    h.execute(world.dst, "INSERT INTO accounts (ref, nm) VALUES (99, 'someone else')")
    report = repair(world, ["[5]"], [Extra((99,), None)])

    assert report.status == "success", report.message
    assert world.log() == [("UPDATE", 5)]
    assert world.accounts()[5] == ("c5", 0)
    assert world.accounts()[99] == ("someone else", 1)  # not ours: left


def test_owns_table_deletes_an_extra_the_ledger_never_saw(world: World) -> None:
    world.start(owns=True)
    h.execute(world.dst, "INSERT INTO accounts (ref, nm) VALUES (99, 'stray')")
    h.execute(world.dst, "UPDATE accounts SET nm = 'edited' WHERE ref = 8")
    # 99: nobody's at the source -> deleted; (8,) as an extra the source holds -> sent, not deleted
    report = repair(world, [], [Extra((99,), None), Extra(("8",), None)])

    assert report.status == "success", report.message
    assert world.log() == [("DELETE", 99), ("UPDATE", 8)]
    assert world.accounts()[8] == ("c8", 1)
    assert 99 not in world.accounts()
    assert not any("not ours" in n for n in report.notes)


def test_a_repair_above_max_keys_is_refused_before_anything_is_read(world: World) -> None:
    """Review finding 8: a mass drift (a column's type or scale changed) makes every digest differ
    and --repair would force-send the whole table; above `max_keys` it is refused instead."""
    world.start()
    h.execute(world.dst, "UPDATE accounts SET nm = 'edited' WHERE ref IN (2, 3, 4)")
    keys = ["[2]", "[3]", "[4]"]
    report = repair(world, keys, [Extra((4,), "[4]"), Extra((99,), None)], max_keys=2)

    assert report.status == "failed" and report.kind == "repair"
    assert report.message is not None
    assert "repair refused: 3 key(s) to re-send, more than max_keys 2" in report.message
    assert "nothing was read or written" in report.message
    assert world.log() == []
    assert world.engine is not None
    allowed = world.engine.repair("customers", keys, [], max_keys=3)  # at the cap: through
    assert allowed.status == "success", allowed.message
    assert world.log() == [("UPDATE", 2), ("UPDATE", 3), ("UPDATE", 4)]
