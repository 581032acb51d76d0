"""`reconcile.repair.repair` on real databases (PostgreSQL -> MariaDB, SQLite -> SQLite): a
business check's mismatched customer group re-sends exactly that customer's invoices (found at
the source through the sync's `map` read backwards, and at the destination through the
ledger), nothing of the other customers; a drift result is handed on as keys and extras."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mapsync.engine import Engine
from mapsync.reconcile import repair as repairs
from mapsync.reconcile.results import CheckResult, Extra, GroupDiff
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  invoices:
    from: {{connection: erp, table: invoices}}
    to: {{connection: portal, table: invoices}}
    key: {{from: id, to: ref}}
    fields:
      account_ref: {{from: customer_no, map: {{C1: A-1, C2: A-2, C3: A-3}}}}
      balance: balance
    changes: {{method: snapshot}}
    deletes: {{policy: hard, max_delete_ratio: 0.5}}
reconcile:
  open_ar:
    sync: invoices
    source: {{connection: erp, table: invoices, group: customer_no, sum: balance}}
    dest: {{connection: portal, table: invoices, group: account_ref, sum: balance}}
  rows:
    drift: invoices
"""
# customer -> its invoices: C1 1-3, C2 4-6 and 10, C3 7-9
CUSTOMER = {i: "C1" if i <= 3 else "C2" if i <= 6 or i == 10 else "C3" for i in range(1, 11)}


def _write_log(url: str) -> None:
    d = h.dialect(url)
    if d == "postgresql":
        h.execute(
            url,
            "CREATE TABLE write_log (id SERIAL PRIMARY KEY, op TEXT, ref INTEGER)",
            "CREATE FUNCTION log_write() RETURNS trigger AS $$ BEGIN "
            "IF TG_OP = 'DELETE' THEN INSERT INTO write_log (op, ref) VALUES (TG_OP, OLD.ref); "
            "ELSE INSERT INTO write_log (op, ref) VALUES (TG_OP, NEW.ref); END IF; "
            "RETURN NULL; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON invoices "
            "FOR EACH ROW EXECUTE FUNCTION log_write()",
        )
        return
    auto = "INT AUTO_INCREMENT" if d == "mysql" else "INTEGER"
    h.execute(url, f"CREATE TABLE write_log (id {auto} PRIMARY KEY, op VARCHAR(10), ref INTEGER)")
    for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        body = f"INSERT INTO write_log (op, ref) VALUES ('{op}', {row}.ref)"
        if d == "mysql":
            h.execute(url, f"CREATE TRIGGER log_{op.lower()} AFTER {op} ON invoices FOR EACH ROW {body}")
        else:
            h.execute(url, f"CREATE TRIGGER log_{op.lower()} AFTER {op} ON invoices BEGIN {body}; END")


class World:
    def __init__(self, src: str, dst: str, folder: Path) -> None:
        self.src, self.dst = src, dst
        h.execute(
            src,
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_no VARCHAR(20), balance NUMERIC(12,2))",
        )
        rows = [{"id": i, "c": c, "b": f"{i}0.25"} for i, c in CUSTOMER.items()]
        h.execute(src, "INSERT INTO invoices VALUES (:id, :c, :b)", params=rows)
        h.execute(
            dst,
            "CREATE TABLE invoices (ref INTEGER PRIMARY KEY, account_ref VARCHAR(20), balance DECIMAL(12,2))",
        )
        (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
        self.loaded = loader.load(folder / "sheet.yaml", env={})
        self.store = StateStore.open("sqlite:///state.db", folder, create=True)
        self.engine = Engine(self.loaded, self.store)
        report = self.engine.run("invoices", "seed")
        assert report.status == "success" and report.counts.written == 10, report

    def close(self) -> None:
        self.engine.close()
        self.store.close()

    def log(self) -> list[tuple[str, int]]:
        return sorted((str(r[0]), int(r[1])) for r in h.query(self.dst, "SELECT op, ref FROM write_log"))

    def invoices(self) -> dict[int, tuple[str, decimal.Decimal]]:
        got = h.query(self.dst, "SELECT ref, account_ref, balance FROM invoices")
        return {int(r[0]): (r[1], decimal.Decimal(str(r[2]))) for r in got}


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


def test_a_mismatched_customer_re_sends_exactly_its_invoices(world: World) -> None:
    h.execute(
        world.dst,
        "UPDATE invoices SET balance = 1 WHERE ref = 4",  # C2: edited by hand
        "DELETE FROM invoices WHERE ref = 5",  # C2: lost at the destination
        "UPDATE invoices SET balance = 2 WHERE ref = 8",  # C3: differs too, but not asked for
    )
    h.execute(world.src, "DELETE FROM invoices WHERE id = 6")  # C2: its delete never delivered
    _write_log(world.dst)
    result = CheckResult(
        "open_ar",
        "business",
        "invoices",
        mismatched=[GroupDiff(("A-2",), decimal.Decimal("190.75"), decimal.Decimal("161.25"))],
    )
    outcome = repairs.repair(world.engine, world.loaded.sheet, result)

    assert outcome.report is not None and outcome.report.status == "success", outcome.report
    assert sorted(outcome.keys) == ["[10]", "[4]", "[5]", "[6]"]  # C2's, source and ledger
    touched = {ref for _, ref in world.log()}
    assert touched <= {4, 5, 6, 10} and {4, 5, 6} <= touched  # C2's invoices only
    assert ("DELETE", 6) in world.log() and ("INSERT", 5) in world.log()
    assert (outcome.sent, outcome.deletes) == (3, 1)
    invoices = world.invoices()
    assert invoices[4] == ("A-2", decimal.Decimal("40.25")) and invoices[5] == (
        "A-2",
        decimal.Decimal("50.25"),
    )
    assert 6 not in invoices
    assert invoices[8] == ("A-3", decimal.Decimal("2"))  # another customer's: untouched
    assert outcome.notes[0] == "check open_ar: 1 group(s) to repair, 4 key(s)"


def test_a_drift_result_is_repaired_by_its_keys_and_extras(world: World) -> None:
    h.execute(
        world.dst, "UPDATE invoices SET balance = 1 WHERE ref = 4", "DELETE FROM invoices WHERE ref = 5"
    )
    h.execute(world.dst, "INSERT INTO invoices VALUES (99, 'A-9', 9)")
    _write_log(world.dst)
    result = CheckResult("rows", "drift", "invoices", changed=["[4]"], missing=["[5]"], extra=[Extra((99,))])
    outcome = repairs.repair(world.engine, world.loaded.sheet, result)

    assert outcome.report is not None and outcome.report.status == "success"
    assert world.log() == [("INSERT", 5), ("UPDATE", 4)]
    assert outcome.not_ours == [(99,)] and (outcome.sent, outcome.deletes) == (2, 0)
    assert any("not ours: left (99)" in n for n in outcome.notes)


def test_nothing_to_repair_starts_no_run(world: World) -> None:
    clean = CheckResult("open_ar", "business", "invoices")
    outcome = repairs.repair(world.engine, world.loaded.sheet, clean)
    assert outcome.report is None and outcome.notes == ["check open_ar: nothing differs, nothing to repair"]
    assert [r["kind"] for r in world.store.history.runs("invoices", 10)] == ["seed"]


def test_extras_that_are_not_ours_alone_start_no_run(world: World) -> None:
    h.execute(world.dst, "INSERT INTO invoices VALUES (99, 'A-9', 9)")
    result = CheckResult("rows", "drift", "invoices", extra=[Extra((99,))])
    outcome = repairs.repair(world.engine, world.loaded.sheet, result)
    assert outcome.report is None and outcome.not_ours == [(99,)]
    assert outcome.notes == ["1 extra destination row(s) not ours: left"]
    assert 99 in world.invoices()


def test_a_groups_rows_the_ledger_does_not_hold_are_left_and_said(world: World) -> None:
    h.execute(world.dst, "INSERT INTO invoices VALUES (99, 'A-2', 9)")  # C2's group, not mapsync's
    h.execute(world.dst, "UPDATE invoices SET balance = 1 WHERE ref = 4")
    _write_log(world.dst)
    result = CheckResult("open_ar", "business", "invoices", mismatched=[GroupDiff(("A-2",), None, None)])
    outcome = repairs.repair(world.engine, world.loaded.sheet, result)

    assert outcome.report is not None and outcome.report.status == "success"
    assert "[99]" not in outcome.keys and 99 not in {ref for _, ref in world.log()}
    assert world.invoices()[99] == ("A-2", decimal.Decimal("9"))
    assert (
        "1 destination row(s) of these group(s) are not in sync invoices's key ledger: left: "
        "not mapsync's (neither repaired nor deleted)"
    ) in outcome.notes


CAST_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  invoices:
    from: {{connection: erp, table: invoices}}
    to: {{connection: portal, table: invoices}}
    key: {{from: id, to: ref}}
    fields:
      account_no: {{from: customer_no, cast: int}}
      balance: balance
    changes: {{method: snapshot}}
    deletes: {{policy: hard}}
reconcile:
  open_ar:
    sync: invoices
    source: {{connection: erp, table: invoices, group: customer_no, sum: balance}}
    dest: {{connection: portal, table: invoices, group: account_no, sum: balance}}
"""


@pytest.mark.postgres
@pytest.mark.mariadb
def test_a_cast_int_group_says_what_it_could_not_look_up(
    pg_database: Callable[[], str], mariadb_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = pg_database(), mariadb_database()
    h.execute(
        src, "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_no VARCHAR(20), balance NUMERIC(12,2))"
    )
    h.execute(src, "INSERT INTO invoices VALUES (1, '007', 10), (2, '7', 20), (3, '8', 30)")
    h.execute(
        dst, "CREATE TABLE invoices (ref INTEGER PRIMARY KEY, account_no INTEGER, balance DECIMAL(12,2))"
    )
    (tmp_path / "sheet.yaml").write_text(CAST_SHEET.format(src=src, dst=dst))
    loaded = loader.load(tmp_path / "sheet.yaml", env={})
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    engine = Engine(loaded, store)
    try:
        assert engine.run("invoices", "seed").counts.written == 3
        h.execute(dst, "DELETE FROM invoices WHERE ref = 2")  # account 7 lost a row
        result = CheckResult("open_ar", "business", "invoices", mismatched=[GroupDiff(("7",), None, None)])
        outcome = repairs.repair(engine, loaded.sheet, result)
        # '7' found at the source, '007' through the destination's row and the ledger
        assert sorted(outcome.keys) == ["[1]", "[2]"]
        assert any(
            n.startswith("group column customer_no is cast to int by sync's field account_no")
            for n in outcome.notes
        ), outcome.notes
    finally:
        engine.close()
        store.close()
