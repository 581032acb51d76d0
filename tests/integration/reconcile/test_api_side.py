"""The CIMcloud side of a business check against the sandbox, the ERP side on real SQL (SQLite and
PostgreSQL): open AR per customer (open invoices in the ERP) vs the portal's customer `balance`
and vs the sandbox's (INFERRED) `invoices` resource: equal data match, a planted difference is
found, `max_calls` stops the listing and says so, and the calls stay within the sandbox's rate
limit (its request log: no 429) while leaving the syncs their share of the budget."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.reconcile import api_side
from mapsync.reconcile.results import SideTotals
from mapsync.rest.budget import Budget
from mapsync.sheet import loader
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from mapsync.testing.sandbox_serve import InProcess
from tests import helpers as h

ENV = {"CIM_PASSWORD": "sandbox-password", "CIM_KEY": "sandbox-key"}
D = decimal.Decimal

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: "${{CIM_KEY}}", username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: {budget}
    retry: {{attempts: 2, backoff: 10ms}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, resource: customer}}
    key: {{from: customer_no, to: username}}
    fields: {{open_balance: balance}}
    changes: {{method: full}}
reconcile:
  open_ar:
    source: {{connection: erp, table: invoices, group: customer_no, sum: balance, where: "open = 1"}}
    dest: {{connection: portal, resource: customers, group: username, sum: balance}}
    max_calls: {max_calls}
  open_invoices:
    source: {{connection: erp, table: invoices, group: customer_no, sum: balance, where: "open = 1"}}
    dest: {{connection: portal, resource: invoices, group: customer, sum: balance, where: {{open: 1}}}}
    max_calls: {max_calls}
  invoice_count:
    source: {{connection: erp, table: invoices, group: customer_no, count: true}}
    dest: {{connection: portal, resource: invoices, group: customer, count: true}}
"""


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], ids=["sqlite", "postgresql"]
)
def sql_db(request: pytest.FixtureRequest) -> Callable[[], str]:
    name = {"sqlite": "sqlite_database", "postgresql": "pg_database"}[request.param]
    factory: Callable[[], str] = request.getfixturevalue(name)
    return factory


class World:
    """ERP invoices (SQL), the portal (sandbox): customers with their balance and the invoices."""

    def __init__(self, src: str, box: InProcess, folder: Path) -> None:
        self.src, self.box, self.folder = src, box, folder
        h.execute(
            src,
            "CREATE TABLE invoices (invoice_no VARCHAR(20) PRIMARY KEY, customer_no VARCHAR(20), "
            "balance NUMERIC(12, 2), open INTEGER)",
        )
        self.store: StateStore | None = None

    def load(self, *, max_calls: int = 20, budget: str = "[]") -> LoadedSheet:
        text = SHEET.format(src=self.src, base=self.box.base_url, max_calls=max_calls, budget=budget)
        (self.folder / "sheet.yaml").write_text(text)
        loaded = loader.load(self.folder / "sheet.yaml", env=ENV)
        if self.store is None:
            self.store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        return loaded

    def add(self, customers: int, per_customer: int = 3) -> None:
        """Invoices of `customers` customers (every third one paid); the portal holds each
        customer's open balance and every invoice."""
        rows = []
        for c in range(customers):
            for i in range(per_customer):
                amount = D(f"{c * 7 % 500}.{(c + i) % 100:02d}") + D("0.01") * i
                rows.append({"n": f"I{c:04d}-{i}", "c": f"C{c:04d}", "b": str(amount), "o": int(i % 3 != 2)})
        h.execute(self.src, "INSERT INTO invoices VALUES (:n, :c, :b, :o)", params=rows)
        store = self.box.sandbox.store
        balances: dict[str, D] = {}
        for r in rows:
            store.put("invoices", "invoice_no", {"invoice_no": r["n"], "customer": r["c"], **_inv(r)})
            if r["o"]:
                balances[r["c"]] = balances.get(r["c"], D(0)) + D(r["b"])
        for c in range(customers):
            key = f"C{c:04d}"
            store.put("customers", "username", {"username": key, "balance": str(balances.get(key, D(0)))})

    def erp(self, where: str = "open = 1") -> dict[tuple[str, ...], D]:
        """The SQL side's totals: SUM in PostgreSQL (exact NUMERIC); SQLite keeps NUMERIC as REAL,
        so its values are read as text and summed as Decimal."""
        if h.dialect(self.src) == "postgresql":
            got = h.query(
                self.src, f"SELECT customer_no, SUM(balance) FROM invoices WHERE {where} GROUP BY 1"
            )
            return {(str(c),): D(v) for c, v in got}
        out: dict[tuple[str, ...], D] = {}
        for c, v in h.query(
            self.src, f"SELECT customer_no, CAST(balance AS TEXT) FROM invoices WHERE {where}"
        ):
            out[(str(c),)] = out.get((str(c),), D(0)) + D(v).quantize(D("0.01"))
        return out

    def side(self, check: str, loaded: LoadedSheet, **pacing: Any) -> SideTotals:
        found = loaded.sheet.reconcile[check]
        assert found.dest is not None
        api = api_side.aggregator(loaded, self.store, api_side.Pacing(**pacing))
        return api(check, found, found.dest, "dest")

    def log(self) -> list[dict[str, Any]]:
        return self.box.sandbox.store.requests()


def _inv(row: dict[str, Any]) -> dict[str, str]:
    return {"balance": row["b"], "open": str(row["o"])}


def differences(source: dict[tuple[str, ...], D], dest: dict[tuple[str, ...], D]) -> dict[Any, Any]:
    """Groups whose values differ, a group missing on one side counted as 0 (`missing: zero`)."""
    groups = set(source) | set(dest)
    return {g: (source.get(g), dest.get(g)) for g in groups if source.get(g, D(0)) != dest.get(g, D(0))}


@pytest.fixture
def world(sql_db: Callable[[], str], cimcloud_inprocess: InProcess, tmp_path: Path) -> Iterator[World]:
    w = World(sql_db(), cimcloud_inprocess, tmp_path)
    yield w
    if w.store is not None:
        w.store.close()


def test_equal_data_match_on_both_resources(world: World) -> None:
    world.add(40)
    loaded = world.load()
    erp = world.erp()
    balances = world.side("open_ar", loaded)
    assert balances.complete and balances.note is None
    assert differences(erp, balances.values) == {}
    assert len(balances.values) == 40 and balances.read.rows == 40 and balances.read.bytes > 0
    invoices = world.side("open_invoices", loaded)  # 120 invoices: 3 pages, the where kept client-side
    assert invoices.complete and invoices.read.rows == 120
    assert differences(erp, invoices.values) == {}
    assert invoices.calls == 3 + 1  # the pages and the token login
    counts = world.side("invoice_count", loaded)
    assert set(counts.values.values()) == {D(3)}
    assert all(isinstance(v, D) for v in balances.values.values())
    assert [r for r in world.log() if r["status"] == 429] == []


def test_planted_balance_difference_is_found(world: World) -> None:
    world.add(30)
    world.box.sandbox.store.put("customers", "username", {"username": "C0007", "balance": "12.34"})
    world.box.sandbox.store.put("customers", "username", {"username": "C9999", "balance": "5.00"})
    loaded = world.load()
    erp = world.erp()
    found = differences(erp, world.side("open_ar", loaded).values)
    assert found == {("C0007",): (erp[("C0007",)], D("12.34")), ("C9999",): (None, D("5.00"))}


def test_a_value_that_is_not_a_number_names_field_and_record(world: World) -> None:
    world.add(2)
    world.box.sandbox.store.put("customers", "username", {"username": "C0001", "balance": "n/a"})
    with pytest.raises(api_side.errors.PermanentError) as err:
        world.side("open_ar", world.load())
    # the record by its position and id, the field, never a value (the text becomes the run's message)
    assert "check open_ar: dest" in str(err.value) and ": field balance is not a number" in str(err.value)
    assert "record 2 (key=" in str(err.value)
    assert "n/a" not in str(err.value) and "C0001" not in str(err.value)


def test_max_calls_stops_the_listing_and_says_so(world: World) -> None:
    world.add(40)  # 120 invoices: three pages
    loaded = world.load(max_calls=2)
    side = world.side("open_invoices", loaded)
    assert not side.complete
    assert side.note == "stopped at max_calls 2 after 50 rows"
    assert side.calls == 2 and side.read.rows == 50
    assert len([r for r in world.log() if r["method"] == "GET"]) == 1
    calls, text = api_side.estimate(
        loaded.sheet.reconcile["open_invoices"],
        loaded.sheet.reconcile["open_invoices"].dest,  # type: ignore[arg-type]
        loaded.sheet.connections["portal"],
        last_rows=120,
    )
    assert calls == 2 and "more than max_calls 2" in text


def test_calls_stay_within_the_sandbox_rate_limit(
    sql_db: Callable[[], str], cimcloud_sandbox_factory: Callable[..., InProcess], tmp_path: Path
) -> None:
    box = cimcloud_sandbox_factory(in_process=True, budget=[(5, dt.timedelta(seconds=1))])
    world = World(sql_db(), box, tmp_path)
    try:
        world.add(70)  # 210 invoices: 5 pages + the login = 6 calls > 5 per second
        loaded = world.load(budget='["5/1s"]')
        side = world.side("open_invoices", loaded)
        assert side.complete and differences(world.erp(), side.values) == {}
        log = world.log()
        assert [r for r in log if r["status"] == 429] == []
        assert side.calls == len(log) == 6
    finally:
        assert world.store is not None
        world.store.close()


def test_yields_to_syncs_when_the_budget_is_nearly_spent(world: World) -> None:
    world.add(40)
    loaded = world.load(budget='["10/15m"]')
    assert world.store is not None
    conn = loaded.sheet.connections["portal"]
    credential = f"cimcloud:{world.box.base_url.rstrip('/')}/sandbox:sandbox"
    syncs = Budget(world.store, credential, [(10, dt.timedelta(minutes=15))])
    for _ in range(6):  # the syncs spent 6 of the 10 calls of this window
        syncs.settle(syncs.acquire())
    side = world.side("open_invoices", loaded)
    # the check takes the login and one page (8 spent), then leaves the last 2 to the syncs
    assert not side.complete
    assert side.note is not None and side.note.startswith("yielded to syncs: 10/15m has 2 calls left")
    assert side.note.endswith("after 50 rows") and side.calls == 2
    assert conn.kind == "cimcloud"
