"""The world of the transaction-export tests (issue 16): a portal that takes orders and an ERP that
imports them.

- Portal (the source: PostgreSQL or SQLite, or MariaDB with `updated_at ... ON UPDATE
  CURRENT_TIMESTAMP`):
  `orders` (order_no, customer, zip, exported, erp_import_status, erp_import_error VARCHAR(60),
  erp_order_number, order_status, updated_at) and `order_lines`.
- ERP (the destination: PostgreSQL or MariaDB): `sales_order` whose `doc_no` the ERP fills (a
  sequence / AUTO_INCREMENT from 5000), keyed for mapsync by the unique `portal_ref`, with a CHECK
  that `zip` has 5 characters, and `sales_order_lines`; every write of a `sales_order` row is
  counted (`helpers.install_write_counter`).
- The sheet: sync `orders` (portal → ERP, `changes: {method: export_flag}`, `status` from the
  constant `new`) and, with `return_leg`, sync `order_status` (ERP `status` → portal
  `order_status`, `changes: {method: full}`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mapsync.engine import Engine, Parts
from mapsync.records import Mapped, WriteResult
from mapsync.run_types import RunReport
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  portal: {{url: "{portal}"}}
  erp: {{url: "{erp}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: sales_order}}
    key: {{from: order_no, to: portal_ref}}
    fields:
      customer: customer
      zip: zip
      status: {{value: new}}
    changes:
      method: export_flag
      flag: exported
      status: erp_import_status
      error: erp_import_error
      document: {{from: doc_no, to: erp_order_number}}
{changes}
    seed: {seed}
    delivery: {{batch: 20}}
    children:
      lines:
        from: {{connection: portal, table: order_lines}}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: order_no, to: portal_ref}}
        key: {{from: [order_no, line_no], to: [portal_ref, line_no]}}
        fields:
          sku: sku
          qty: qty
"""

RETURN_LEG = """
  order_status:
    from: {connection: erp, table: sales_order}
    to: {connection: portal, table: orders}
    key: {from: portal_ref, to: order_no}
    fields:
      order_status: status
    changes: {method: full}
"""

# (exported, erp_import_status, erp_import_error, erp_order_number) of a portal order
PortalState = tuple[Any, Any, Any, Any]


def _portal_ddl(dialect: str) -> list[str]:
    stamp = (
        "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)"
        if dialect == "mysql"
        else "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP"
    )
    return [
        "CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer VARCHAR(40) NOT NULL, "
        "zip VARCHAR(10), exported INTEGER, erp_import_status VARCHAR(20), "
        "erp_import_error VARCHAR(60), erp_order_number INTEGER, order_status VARCHAR(20), "
        f"updated_at {stamp})",
        "CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20), qty INTEGER, PRIMARY KEY (order_no, line_no))",
    ]


def _erp_ddl(dialect: str) -> list[str]:
    lines = (
        "CREATE TABLE sales_order_lines (portal_ref INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20), qty INTEGER, PRIMARY KEY (portal_ref, line_no))"
    )
    columns = (
        "portal_ref INTEGER NOT NULL UNIQUE, customer VARCHAR(40), zip VARCHAR(10), status VARCHAR(20), "
        "CONSTRAINT zip_has_five CHECK (CHAR_LENGTH(zip) = 5)"
    )
    if dialect == "mysql":
        return [
            f"CREATE TABLE sales_order (doc_no INTEGER AUTO_INCREMENT PRIMARY KEY, {columns}) "
            "AUTO_INCREMENT = 5000",
            lines,
        ]
    return [
        f"CREATE TABLE sales_order (doc_no SERIAL PRIMARY KEY, {columns})",
        "ALTER SEQUENCE sales_order_doc_no_seq RESTART WITH 5000",
        lines,
    ]


class World:
    """The two databases, the sheet, one Engine over the sheet's state store (the CLI, run in
    this process, uses the same store), and what each side holds."""

    def __init__(
        self,
        portal: str,
        erp: str,
        folder: Path,
        *,
        version: str | None = "updated_at",
        changes: str = "",
        seed: str = "{}",
        return_leg: bool = False,
        extra: str = "",
    ) -> None:
        self.portal, self.erp, self.folder = portal, erp, folder
        h.execute(portal, *_portal_ddl(h.dialect(portal)))
        h.execute(erp, *_erp_ddl(h.dialect(erp)))
        h.install_write_counter(erp, "sales_order")
        self.env: dict[str, str] = {}  # the environment the sheet is loaded with (`${VAR}`)
        self._engine: Engine | None = None
        self._store: StateStore | None = None
        self.during_write: Callable[[], None] | None = None  # called before each write at the ERP
        self.sheet(version=version, changes=changes, seed=seed, return_leg=return_leg, extra=extra)

    def sheet(
        self,
        *,
        version: str | None = "updated_at",
        changes: str = "",
        seed: str = "{}",
        return_leg: bool = False,
        extra: str = "",
    ) -> None:
        """(Re)write the sheet: `changes` are more lines of the export's `changes:` (6 spaces in),
        `extra` more syncs (2 spaces in)."""
        self.close()
        more = [f"      version: {version}"] if version else []
        if changes:
            more.append(changes)
        text = SHEET.format(portal=self.portal, erp=self.erp, changes="\n".join(more), seed=seed)
        (self.folder / "sheet.yaml").write_text(text + (RETURN_LEG if return_leg else "") + extra)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # ----------------------------------------------------------------- runs

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore.open("sqlite:///.mapsync/state.db", self.folder, create=True)
        return self._store

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _Engine(self, loader.load(self.folder / "sheet.yaml", env=self.env), self.store)
        return self._engine

    def run(self, kind: str = "run", sync: str = "orders") -> RunReport:
        return self.engine.run(sync, kind)

    def reexport(self, *keys: str) -> RunReport:
        return self.engine.reexport("orders", [(k,) for k in keys] if keys else None)

    def cli(self, *args: str) -> Any:
        self.engine.release()  # the CLI opens its own connections
        return h.mapsync(*args, cwd=self.folder)

    def open_errors(self) -> dict[str, str | None]:
        return self.store.open_error_versions("orders")

    # ----------------------------------------------------------------- the portal

    def order(
        self, no: int, customer: str = "", zip: str = "12345", lines: int = 2, exported: Any = None
    ) -> None:
        h.execute(
            self.portal,
            "INSERT INTO orders (order_no, customer, zip, exported) VALUES (:n, :c, :z, :e)",
            params={"n": no, "c": customer or f"customer {no}", "z": zip, "e": exported},
        )
        if lines:
            h.execute(
                self.portal,
                "INSERT INTO order_lines VALUES (:n, :l, :s, :q)",
                params=[{"n": no, "l": i, "s": f"SKU{no}-{i}", "q": i * 10} for i in range(1, lines + 1)],
            )

    def edit(self, no: int, **cols: Any) -> None:
        """A user's edit of a portal order: the columns and a new `updated_at`."""
        now = {
            "mysql": "CURRENT_TIMESTAMP(6)",
            "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        }.get(h.dialect(self.portal), "clock_timestamp()")
        sets = ", ".join([*(f"{c} = :{c}" for c in cols), f"updated_at = {now}"])
        h.execute(self.portal, f"UPDATE orders SET {sets} WHERE order_no = :n", params={**cols, "n": no})

    def reset(self, no: int) -> None:
        """A worker sets the flag back (only the flag, as a worker would)."""
        h.execute(self.portal, "UPDATE orders SET exported = 0 WHERE order_no = :n", params={"n": no})

    def states(self) -> dict[int, PortalState]:
        rows = h.query(
            self.portal,
            "SELECT order_no, exported, erp_import_status, erp_import_error, erp_order_number FROM orders",
        )
        return {int(r[0]): (r[1], r[2], r[3], r[4]) for r in rows}

    def stamps(self) -> dict[int, Any]:
        return {int(r[0]): r[1] for r in h.query(self.portal, "SELECT order_no, updated_at FROM orders")}

    # ----------------------------------------------------------------- the ERP

    def erp_orders(self) -> dict[int, tuple[int, str, str, str]]:
        """portal_ref → (doc_no, customer, zip, status)."""
        rows = h.query(self.erp, "SELECT portal_ref, doc_no, customer, zip, status FROM sales_order")
        return {int(r[0]): (int(r[1]), r[2], r[3], r[4]) for r in rows}

    def erp_lines(self) -> dict[int, list[tuple[int, str, int]]]:
        """portal_ref → its lines (line_no, sku, qty) in order."""
        out: dict[int, list[tuple[int, str, int]]] = {}
        for r in h.query(
            self.erp,
            "SELECT portal_ref, line_no, sku, qty FROM sales_order_lines ORDER BY portal_ref, line_no",
        ):
            out.setdefault(int(r[0]), []).append((int(r[1]), r[2], int(r[3])))
        return out

    def erp_counts(self) -> tuple[int, int]:
        """(rows of sales_order, rows of sales_order_lines): what a duplicate would show."""
        return (
            int(h.query(self.erp, "SELECT COUNT(*) FROM sales_order")[0][0]),
            int(h.query(self.erp, "SELECT COUNT(*) FROM sales_order_lines")[0][0]),
        )

    def erp_writes(self) -> int:
        """Rows of `sales_order` written so far (insert or update)."""
        return h.writes(self.erp)

    def erp_set(self, no: int, **cols: Any) -> None:
        """The ERP's own edit of an imported order."""
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        h.execute(self.erp, f"UPDATE sales_order SET {sets} WHERE portal_ref = :n", params={**cols, "n": no})


def lines_of(no: int, count: int = 2) -> list[tuple[int, str, int]]:
    """The ERP lines `World.order(no, lines=count)` should become."""
    return [(i, f"SKU{no}-{i}", i * 10) for i in range(1, count + 1)]


class _Engine(Engine):
    """The real engine; `World.during_write` (when set) runs before each write at the ERP, e.g.
    a user editing the portal order between the read and the write-back."""

    def __init__(self, world: World, *args: Any) -> None:
        super().__init__(*args)
        self.world = world

    def parts(self, name: str) -> Parts:
        parts = super().parts(name)
        dest = parts.dest
        if name == "orders" and not getattr(dest, "_export_world", False):
            real = dest.write

            def write(batch: Sequence[Mapped], *, fresh: bool = False) -> WriteResult:
                if self.world.during_write is not None:
                    self.world.during_write()
                return real(batch, fresh=fresh)

            dest.write = write  # type: ignore[method-assign]
            dest._export_world = True  # type: ignore[attr-defined]
        return parts
