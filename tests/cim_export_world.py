"""The world of the CIMcloud order-export tests (issue 17): the CIMcloud sandbox's `OnlineOrders`
(in process, through its httpx transport) exported into a SQL ERP (SQLite, PostgreSQL, MariaDB)
by an in-process Engine.

- Sandbox orders `W0001`… (`customer`, `total`), each with `lines` lines (`sku`, `quantity`,
  `price`), nested under `details` or read from `order_detail` (`Config.online_orders_lines`).
- ERP: `sales_orders` (`erp_order_no` filled by the ERP: a serial / AUTO_INCREMENT / rowid,
  `order_no` unique, `status` default `new`) and `sales_order_lines`; a refusal is planted by
  `block(customer)` (a CHECK constraint, a trigger on SQLite) and lifted by `unblock()`.
- Every write of a `sales_orders` row is counted (`writes`); every status write to the sandbox's `orders` is recorded with its record count (`posts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mapsync.engine import Engine
from mapsync.run_types import RunReport
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing.sandbox_serve import InProcess
from tests import helpers as h

ENV = {"CIM_PASSWORD": "sandbox-password"}
SYNC = "web_orders"

SHEET = """
version: 1
connections:
  erp: {{url: "{erp}"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: {budget}
syncs:
  web_orders:
    from: {{connection: cim, resource: OnlineOrders}}
    to: {{connection: erp, table: sales_orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields:
      customer: customer
      total: {{from: total, cast: decimal, scale: 2}}
    changes:
      method: export_flag
      flag: exported
{changes}
    children:
      lines:
        from: {lines_from}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: c_ordnum, to: order_no}}
        key: {{from: [c_ordnum, line_no], to: [order_no, line_no]}}
        fields:
          sku: sku
          qty: {{from: quantity, cast: decimal}}
          price: {{from: price, cast: decimal}}
"""

STATUS = "      status: erp_import_status\n      error: erp_import_error"


def _erp_ddl(dialect: str) -> list[str]:
    columns = (
        "order_no VARCHAR(20) NOT NULL UNIQUE, customer VARCHAR(40), total NUMERIC(10, 2), "
        "status VARCHAR(20) DEFAULT 'new'"
    )
    lines = (
        "CREATE TABLE sales_order_lines (order_no VARCHAR(20) NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20), qty NUMERIC(10, 2), price NUMERIC(10, 2), PRIMARY KEY (order_no, line_no))"
    )
    if dialect == "mysql":
        head = f"CREATE TABLE sales_orders (erp_order_no INTEGER AUTO_INCREMENT PRIMARY KEY, {columns}) "
        return [head + "AUTO_INCREMENT = 7000", lines]
    if dialect == "postgresql":
        return [
            f"CREATE TABLE sales_orders (erp_order_no SERIAL PRIMARY KEY, {columns})",
            "ALTER SEQUENCE sales_orders_erp_order_no_seq RESTART WITH 7000",
            lines,
        ]
    return [f"CREATE TABLE sales_orders (erp_order_no INTEGER PRIMARY KEY, {columns})", lines]


def number(i: int) -> str:
    return f"W{i:04d}"


def lines_of(i: int, n: int) -> list[dict[str, str]]:
    return [{"sku": f"SKU{i}-{j}", "quantity": str(j), "price": f"{j}.50"} for j in range(1, n + 1)]


class World:
    def __init__(
        self, erp: str, box: InProcess, folder: Path, *, changes: str = STATUS, budget: str = "[]"
    ) -> None:
        self.erp, self.box, self.folder, self.budget = erp, box, folder, budget
        self.dialect = h.dialect(erp)
        h.execute(erp, *_erp_ddl(self.dialect))
        h.install_write_counter(erp, "sales_orders")
        self._engine: Engine | None = None
        self._store: StateStore | None = None
        self.posts: list[int] = []  # records per status write to `orders`
        sandbox = box.sandbox
        write = sandbox.write

        def counted(name: str, body: Any, *, update_only: bool) -> tuple[int, Any]:
            if name.lower() == "orders":
                self.posts.append(len(body) if isinstance(body, list) else 1)
            return write(name, body, update_only=update_only)

        sandbox.write = counted  # type: ignore[method-assign]
        self.sheet(changes)

    def sheet(self, changes: str = STATUS) -> None:
        self.close()
        separate = self.box.sandbox.config.online_orders_lines == "separate"
        lines_from = (
            "{connection: cim, resource: order_detail}" if separate else "{connection: cim, nested: details}"
        )
        text = SHEET.format(
            erp=self.erp, base=self.box.base_url, changes=changes, lines_from=lines_from, budget=self.budget
        )
        (self.folder / "sheet.yaml").write_text(text)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore.open("sqlite:///.mapsync/state.db", self.folder, create=True)
        return self._store

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(loader.load(self.folder / "sheet.yaml", env=ENV), self.store)
        return self._engine

    def run(self, kind: str = "run") -> RunReport:
        return self.engine.run(SYNC, kind)

    # ----------------------------------------------------------------- CIMcloud

    def add(self, first: int, count: int, lines: int = 2) -> None:
        for i in range(first, first + count):
            self.box.sandbox.add_order(
                {"c_ordnum": number(i), "customer": f"C{i % 7}", "total": f"{i}.25"}, lines_of(i, lines)
            )

    def cim(self) -> dict[str, dict[str, Any]]:
        return {o["c_ordnum"]: o for o in self.box.sandbox.orders()}

    def log(self) -> list[dict[str, Any]]:
        return self.box.sandbox.store.requests()

    def gets(self) -> int:
        """OnlineOrders GETs so far."""
        return sum(1 for r in self.log() if r["method"] == "GET" and r["path"].lower() == "onlineorders")

    def status_posts(self) -> int:
        return sum(1 for r in self.log() if r["method"] in ("POST", "PUT") and r["path"].lower() == "orders")

    def set_exported(self, key: str, value: str) -> None:
        """A worker's re-export at the site: only the flag, straight in the sandbox's store."""
        store = self.box.sandbox.store
        (row,) = [r for r in store.all("orders") if r["c_ordnum"] == key]
        store.set_fields(int(row["key"]), {"exported": value})

    # ----------------------------------------------------------------- the ERP

    def orders(self) -> dict[str, tuple[Any, ...]]:
        """order_no → (customer, total as text, status, erp_order_no)."""
        rows = h.query(self.erp, "SELECT order_no, customer, total, status, erp_order_no FROM sales_orders")
        return {r[0]: (r[1], f"{float(r[2]):.2f}", r[3], int(r[4])) for r in rows}

    def lines(self) -> dict[str, list[tuple[int, str, float, float]]]:
        out: dict[str, list[tuple[int, str, float, float]]] = {}
        for r in h.query(
            self.erp,
            "SELECT order_no, line_no, sku, qty, price FROM sales_order_lines ORDER BY order_no, line_no",
        ):
            out.setdefault(r[0], []).append((int(r[1]), r[2], float(r[3]), float(r[4])))
        return out

    def counts(self) -> tuple[int, int]:
        return (
            int(h.query(self.erp, "SELECT COUNT(*) FROM sales_orders")[0][0]),
            int(h.query(self.erp, "SELECT COUNT(*) FROM sales_order_lines")[0][0]),
        )

    def writes(self) -> int:
        """Rows of `sales_orders` written so far (insert or update)."""
        return h.writes(self.erp)

    def block(self, customer: str) -> None:
        """The ERP refuses orders of this customer."""
        if self.dialect == "sqlite":
            h.execute(
                self.erp,
                f"CREATE TRIGGER blocked BEFORE INSERT ON sales_orders WHEN NEW.customer = '{customer}' "
                "BEGIN SELECT RAISE(ABORT, 'customer is blocked'); END",
            )
        else:
            h.execute(
                self.erp,
                f"ALTER TABLE sales_orders ADD CONSTRAINT customer_blocked CHECK (customer <> '{customer}')",
            )

    def unblock(self) -> None:
        if self.dialect == "sqlite":
            h.execute(self.erp, "DROP TRIGGER blocked")
        else:
            h.execute(self.erp, "ALTER TABLE sales_orders DROP CONSTRAINT customer_blocked")


def expected_lines(i: int, n: int) -> list[tuple[int, str, float, float]]:
    return [(j, f"SKU{i}-{j}", float(j), j + 0.5) for j in range(1, n + 1)]
