"""Business checks on real databases: open AR per customer, PostgreSQL ERP → MariaDB portal and
SQLite → SQLite. Equal data matches; planted differences (a changed amount, an invoice missing
in the portal, an extra invoice, a group only in the portal) are all found and nothing else;
tolerances and the `missing` policy; groups translated through the sync's map; sums exact over
10,000 invoices whose float sum drifts."""

from __future__ import annotations

import decimal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.connectors.sql import SqlDatabase
from mapsync.engine import Engine
from mapsync.errors import ConfigError
from mapsync.reconcile import business, compute
from mapsync.reconcile.results import CheckResult, GroupDiff, SideTotals
from mapsync.reconcile.translate import Translator
from mapsync.sheet import loader
from mapsync.sheet.reconcile_models import ReconcileCheck, Side, Tolerance
from mapsync.state.memory import MemoryStore
from tests import helpers as h

D = decimal.Decimal

WORLDS = [
    pytest.param(("sqlite_database", "sqlite_database"), id="sqlite-sqlite"),
    pytest.param(
        ("pg_database", "mariadb_database"),
        id="postgresql-mariadb",
        marks=[pytest.mark.postgres, pytest.mark.mariadb],
    ),
]
CUSTOMERS = {"C001": "A-1", "C002": "A-2", "C003": "A-3", "C004": "A-4", "C005": "A-5"}
# (invoice, customer, balance, open)
INVOICES = [
    ("I1", "C001", "100.10", 1),
    ("I2", "C001", "0.20", 1),
    ("I3", "C002", "55.55", 1),
    ("I4", "C003", "10.00", 1),
    ("I5", "C004", "99.99", 1),
    ("I6", "C005", "0.30", 1),
    ("I7", "C005", "1000.00", 0),  # closed: not in the portal, not open AR
]


@pytest.fixture(params=WORLDS)
def urls(request: pytest.FixtureRequest) -> tuple[str, str]:
    erp: Callable[[], str] = request.getfixturevalue(request.param[0])
    portal: Callable[[], str] = request.getfixturevalue(request.param[1])
    erp_url, portal_url = erp(), portal()
    h.execute(
        erp_url,
        "CREATE TABLE invoices (invoice_no VARCHAR(20) PRIMARY KEY, customer_no VARCHAR(10), "
        "balance NUMERIC(12,2), open INTEGER)",
    )
    h.execute(
        portal_url,
        "CREATE TABLE invoices (invoice_ref VARCHAR(20) PRIMARY KEY, account_ref VARCHAR(10), "
        "amount DECIMAL(12,2))",
    )
    return erp_url, portal_url


def _fill(erp: str, portal: str, rows: list[tuple[str, str, str, int]] = INVOICES) -> None:
    h.execute(
        erp,
        "INSERT INTO invoices VALUES (:i, :c, :b, :o)",
        params=[{"i": i, "c": c, "b": b, "o": o} for i, c, b, o in rows],
    )
    h.execute(
        portal,
        "INSERT INTO invoices VALUES (:i, :a, :b)",
        params=[{"i": i, "a": CUSTOMERS[c], "b": b} for i, c, b, o in rows if o],
    )


def _sheet(tmp_path: Path, erp: str, portal: str, check: str = "") -> loader.LoadedSheet:
    mapping = ", ".join(f"{k}: {v}" for k, v in CUSTOMERS.items())
    text = f"""\
    version: 1
    connections:
      erp: {{url: "{erp}"}}
      portal: {{url: "{portal}"}}
    syncs:
      invoices:
        from: {{connection: erp, table: invoices}}
        to: {{connection: portal, table: invoices}}
        key: {{from: invoice_no, to: invoice_ref}}
        fields:
          account_ref: {{from: customer_no, map: {{{mapping}}}}}
          amount: balance
        changes: {{method: full}}
    reconcile:
      open_ar:
        sync: invoices
        source: {{connection: erp, table: invoices, group: customer_no, sum: balance, where: "open = 1"}}
        dest: {{connection: portal, table: invoices, group: account_ref, sum: amount}}
    """
    path = tmp_path / "sheet.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.indent(textwrap.dedent(check), "  "), encoding="utf-8")
    return loader.load(path, env={})


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., CheckResult]]:
    opened: list[Engine] = []

    def run_check(erp: str, portal: str, name: str = "open_ar", check: str = "", **over: Any) -> CheckResult:
        loaded = _sheet(tmp_path, erp, portal, check)
        cfg = loaded.sheet.reconcile[name]
        if over:
            cfg = cfg.model_copy(update=over)
        opened.append(Engine(loaded, MemoryStore()))  # the runner's opener: the engine's handles
        return business.run_business(
            name, cfg, loaded.sheet, compute.sql_of(opened[-1]), secrets=loaded.secrets
        )

    yield run_check
    for engine in opened:
        engine.close()


def test_equal_data_reports_zero_mismatches(urls: tuple[str, str], run: Callable[..., CheckResult]) -> None:
    _fill(*urls)
    result = run(*urls)
    assert result.error is None and result.ok, result.to_json()
    assert (result.compared, result.matched) == (5, 5)
    # one row per group; SQLite streams each open invoice's value (summed exactly in Python)
    per = 6 if h.dialect(urls[0]) == "sqlite" else 5
    assert result.read["source"].rows == per and result.read["dest"].rows == per
    assert result.read["source"].bytes > 0


def test_planted_differences_are_all_found_and_nothing_else(
    urls: tuple[str, str], run: Callable[..., CheckResult]
) -> None:
    erp, portal = urls
    _fill(erp, portal)
    h.execute(portal, "UPDATE invoices SET amount = 105.10 WHERE invoice_ref = 'I1'")  # changed amount
    h.execute(portal, "DELETE FROM invoices WHERE invoice_ref = 'I5'")  # C004's only invoice missing
    h.execute(portal, "INSERT INTO invoices VALUES ('X1', 'A-3', 2.50)")  # an extra invoice of C003
    h.execute(portal, "INSERT INTO invoices VALUES ('X2', 'A-9', 7.00)")  # a customer only in the portal
    result = run(erp, portal)
    assert result.error is None
    assert result.mismatched == [
        GroupDiff(("A-1",), D("100.30"), D("105.30")),
        GroupDiff(("A-3",), D("10.00"), D("12.50")),
    ]
    assert result.missing_dest == [GroupDiff(("A-4",), D("99.99"), None)]
    assert result.missing_source == [GroupDiff(("A-9",), None, D("7.00"))]
    assert (result.compared, result.matched, result.differences()) == (6, 2, 4)
    assert [d.difference for d in result.mismatched] == [D("-5"), D("-2.5")]  # exact, by value
    assert result.to_json()["status"] == "differs"


def test_tolerances_absolute_and_relative(urls: tuple[str, str], run: Callable[..., CheckResult]) -> None:
    erp, portal = urls
    _fill(erp, portal)
    h.execute(portal, "UPDATE invoices SET amount = amount + 0.01 WHERE invoice_ref = 'I3'")  # 55.56
    h.execute(portal, "UPDATE invoices SET amount = 10.05 WHERE invoice_ref = 'I4'")  # C003: 10.00 vs 10.05
    absolute = run(erp, portal, tolerance=Tolerance(absolute=D("0.01")))
    assert [d.group for d in absolute.mismatched] == [("A-3",)] and absolute.matched == 4
    relative = run(erp, portal, tolerance=Tolerance(relative=D("0.005")))  # 0.05 / 10.05 < 0.005
    assert relative.ok and relative.matched == 5
    exact = run(erp, portal)
    assert [d.group for d in exact.mismatched] == [("A-2",), ("A-3",)]


def test_missing_zero_matches_a_zero_balance_and_differ_reports_it(
    urls: tuple[str, str], run: Callable[..., CheckResult]
) -> None:
    erp, portal = urls
    _fill(erp, portal)
    h.execute(portal, "INSERT INTO invoices VALUES ('X3', 'A-7', 0.00)")  # a portal customer owing nothing
    zero = run(erp, portal)
    assert zero.ok and (zero.compared, zero.matched) == (6, 6)
    differ = run(erp, portal, missing="differ")
    assert differ.missing_source == [GroupDiff(("A-7",), None, D("0.00"))] and differ.matched == 5


def test_groups_by_a_key_rename_count_rows(urls: tuple[str, str], run: Callable[..., CheckResult]) -> None:
    erp, portal = urls
    _fill(erp, portal)
    h.execute(portal, "INSERT INTO invoices VALUES ('X1', 'A-1', 1.00)")
    check = """\
    per_invoice:
      sync: invoices
      source: {connection: erp, table: invoices, group: invoice_no, count: true, where: "open = 1"}
      dest: {connection: portal, table: invoices, group: invoice_ref, count: true}
    """
    result = run(erp, portal, name="per_invoice", check=check)
    assert result.missing_dest == [] and result.missing_source == [GroupDiff(("X1",), None, D(1))]
    assert result.matched == 6


def test_a_query_side_and_a_check_without_its_sync(
    urls: tuple[str, str], run: Callable[..., CheckResult]
) -> None:
    erp, portal = urls
    _fill(erp, portal)
    check = """\
    by_query:
      sync: invoices
      source:
        connection: erp
        query: "SELECT customer_no, SUM(balance) FROM invoices WHERE open = 1 GROUP BY customer_no"
        group: customer_no
      dest: {connection: portal, table: invoices, group: account_ref, sum: amount}
    """
    assert run(erp, portal, name="by_query", check=check).ok
    # without the sync, ERP customer numbers are compared with portal refs as they are: none meet
    bare = run(erp, portal, sync=None)
    assert len(bare.missing_dest) == 5 and len(bare.missing_source) == 5 and bare.matched == 0


def test_colons_in_the_authors_sql_are_sql_not_bind_parameters(
    urls: tuple[str, str], run: Callable[..., CheckResult]
) -> None:
    """A `:word` in a `where` or `query` (a time literal) is the author's SQL: SQLAlchemy's text()
    would take it for a bind parameter and refuse the query for want of a value."""
    erp, portal = urls
    _fill(erp, portal)
    where = "open = 1 AND ':30' <> ':y'"
    check = f"""\
    by_query:
      sync: invoices
      source:
        connection: erp
        query: "SELECT customer_no, SUM(balance) FROM invoices WHERE {where} GROUP BY customer_no"
        group: customer_no
      dest: {{connection: portal, table: invoices, group: account_ref, sum: amount, where: "':b' <> ''"}}
    """
    result = run(erp, portal, name="by_query", check=check)
    assert result.error is None and result.ok and result.matched == 5, result.to_json()


def test_a_non_invertible_translation_and_a_wrong_column_are_errors(
    tmp_path: Path, urls: tuple[str, str], run: Callable[..., CheckResult]
) -> None:
    erp, portal = urls
    _fill(erp, portal)
    loaded = _sheet(tmp_path, erp, portal)
    sheet = loaded.sheet
    sync = sheet.syncs["invoices"]
    field = sync.fields["account_ref"].model_copy(update={"case": "upper"})
    sync = sync.model_copy(update={"fields": {**sync.fields, "account_ref": field}})
    sheet = sheet.model_copy(update={"syncs": {"invoices": sync}})
    engine = Engine(loaded, MemoryStore())
    try:
        result = business.run_business("open_ar", sheet.reconcile["open_ar"], sheet, compute.sql_of(engine))
        assert result.error == (
            "check open_ar: group customer_no cannot be translated through sync invoices: "
            "field account_ref uses case (not invertible)"
        )
        assert result.to_json()["status"] == "error"
    finally:
        engine.close()
    check = sheet.reconcile["open_ar"]
    assert check.dest is not None
    wrong = run(erp, portal, dest=check.dest.model_copy(update={"sum": "amount_typo"}))
    assert wrong.error is not None and "sum column 'amount_typo' is not in table invoices" in wrong.error


def test_sums_are_exact_over_10000_invoices(urls: tuple[str, str]) -> None:
    """On each server of the world (PostgreSQL and MariaDB; SQLite): the Decimal totals equal the
    Python Decimal sum of 10,000 balances 0.1 … 10.0, whose float sum drifts."""
    erp, portal = urls
    rows = [(f"I{i:05}", f"C{i % 7:03}", str(D(i % 100 + 1) / 10)) for i in range(10_000)]
    h.execute(
        erp,
        "INSERT INTO invoices VALUES (:i, :c, :b, 1)",
        params=[{"i": i, "c": c, "b": b} for i, c, b in rows],
    )
    h.execute(
        portal,
        "INSERT INTO invoices VALUES (:i, :c, :b)",
        params=[{"i": i, "c": c, "b": b} for i, c, b in rows],
    )
    expected: dict[tuple[str, ...], D] = {}
    floats: dict[tuple[str, ...], float] = {}
    for _, c, b in rows:
        expected[(c,)] = expected.get((c,), D(0)) + D(b)
        floats[(c,)] = floats.get((c,), 0.0) + float(b)
    assert any(str(floats[g]) != str(expected[g].normalize()) for g in expected)  # floats drift
    for url, table, group, value in (
        (erp, "invoices", "customer_no", "balance"),
        (portal, "invoices", "account_ref", "amount"),
    ):
        db = SqlDatabase("db", url, Path.cwd())
        try:
            side = Side.model_validate({"connection": "db", "table": table, "group": group, "sum": value})
            totals = business.aggregate_sql(db, side)
        finally:
            db.close()
        assert totals.values == expected, h.dialect(url)
        assert all(isinstance(v, D) for v in totals.values.values())
        assert totals.note is None and totals.complete


def test_an_incomplete_side_compares_nothing_and_untranslated_values_are_noted() -> None:
    check = ReconcileCheck.model_validate(
        {
            "source": {"connection": "erp", "table": "t", "group": "g", "sum": "v"},
            "dest": {"connection": "api", "resource": "R", "group": "g", "sum": "v"},
        }
    )
    whole = SideTotals({("A",): D("1.0")})
    cut = SideTotals(
        {("A",): D(1)}, calls=20, complete=False, note="stopped at max_calls 20: groups not compared"
    )
    result = business.compare("c", check, whole, cut, Translator())
    assert result.error == "dest side incomplete: groups not compared" and result.compared == 0
    assert result.notes == ["stopped at max_calls 20: groups not compared"] and result.calls == 20
    # an API side's text groups meet the SQL side's: trailing spaces do not count, 1.0 equals 1
    same = business.compare("c", check, whole, SideTotals({("A  ",): D(1)}), Translator())
    assert same.ok and same.matched == 1


def test_a_sqlite_query_summing_floats_says_so(sqlite_database: Callable[[], str]) -> None:
    url = sqlite_database()
    h.execute(url, "CREATE TABLE t (g TEXT, v NUMERIC(12,2))", "INSERT INTO t VALUES ('a', 0.1), ('a', 0.2)")
    db = SqlDatabase("erp", url, Path.cwd())
    try:
        by_query = Side.model_validate(
            {"connection": "erp", "query": "SELECT g, SUM(v) FROM t GROUP BY g", "group": "g"}
        )
        floating = business.aggregate_sql(db, by_query, place="check c: source")
        by_table = Side.model_validate({"connection": "erp", "table": "t", "group": "g", "sum": "v"})
        exact = business.aggregate_sql(db, by_table)
        wrong = Side.model_validate({"connection": "erp", "query": "SELECT g FROM t", "group": "g"})
        with pytest.raises(ConfigError, match="returns 1 column"):
            business.aggregate_sql(db, wrong, place="check c: source")
    finally:
        db.close()
    assert floating.values == {("a",): D("0.30000000000000004")}
    assert floating.note == "check c: source: 1 value(s) came back as floating point numbers (not exact)"
    assert exact.values == {("a",): D("0.3")} and exact.note is None
