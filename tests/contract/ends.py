"""Every Source and Destination implementation, built the way the engine builds it: a sheet is
loaded and the connector registry (`mapsync.connectors.REGISTRY`) connects it and makes the
sync's source or destination. The contract suites (test_destination.py, test_source.py) take
these through one fixture each, parametrised over the implementations (see conftest.py).

All destinations hold `accounts`-like rows: key `ref_id` (text), fields `nm` and `status`, the
shape the CIMcloud sandbox's `account` resource has, so one test body serves SQL and the APIs.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mapsync import connectors, records
from mapsync.ports import Destination, Handle, Source
from mapsync.sheet import loader
from mapsync.testing.fakes import MemoryDestination, MemorySource

if TYPE_CHECKING:
    from mapsync.testing.sandbox import Running

ENV = {"CIM_PASSWORD": "sandbox-password", "CIM_KEY": "sandbox-key"}

Stored = dict[str, dict[str, Any]]  # ref_id → the row as the destination holds it


def uid() -> str:
    return uuid.uuid4().hex[:8]


def sql_execute(url: str, *stmts: str, params: list[dict[str, Any]] | None = None) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for stmt in stmts:
                conn.execute(sa.text(stmt), params or [{}])
    finally:
        engine.dispose()


def sql_query(url: str, stmt: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(stmt))]
    finally:
        engine.dispose()


def sql_url(url: str) -> str:
    """The SQLAlchemy URL (with its driver) the tests' own statements use."""
    made = sa.make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}.get(made.drivername)
    return made.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def sql_connection(url: str) -> str:
    return f'{{url: "{url}"}}'


def cim_connection(box: Running) -> str:
    return (
        f'{{kind: cimcloud, base_url: "{box.base_url}", site: sandbox, budget: [], '
        'auth: {type: token, auth_key: "${CIM_KEY}", username: sandbox, password: "${CIM_PASSWORD}"}, '
        "retry: {attempts: 1}}"
    )


def rest_connection(box: Running) -> str:
    return (
        f'{{kind: rest, base_url: "{box.base_url}/sandbox/", '
        'auth: {type: basic, username: sandbox, password: "${CIM_PASSWORD}"}, '
        "write: {batch: 10}, retry: {attempts: 1}}"
    )


@dataclasses.dataclass
class Built:
    """A sync's loaded sheet and the handles opened for it (closed by `close`)."""

    loaded: loader.LoadedSheet
    handles: list[Handle] = dataclasses.field(default_factory=list)

    def handle(self, name: str) -> Handle:
        conn = self.loaded.sheet.connections[name]
        made = connectors.REGISTRY[conn.kind].connect(name, conn, self.loaded.folder)
        self.handles.append(made)
        return made

    def destination(self) -> Destination:
        cfg = self.loaded.sheet.syncs["things"]
        kind = self.loaded.sheet.connections[cfg.to.connection].kind
        return connectors.REGISTRY[kind].destination(self.handle(cfg.to.connection), "things", cfg, ())

    def source(self) -> Source:
        cfg = self.loaded.sheet.syncs["things"]
        kind = self.loaded.sheet.connections[cfg.from_.connection].kind
        return connectors.REGISTRY[kind].source(self.handle(cfg.from_.connection), "things", cfg, None)

    def close(self) -> None:
        for made in self.handles:
            made.close()


def build(folder: Path, text: str) -> Built:
    (folder / "sheet.yaml").write_text(text)
    return Built(loader.load(folder / "sheet.yaml", env=ENV))


# ----------------------------------------------------------------------------- destinations


@dataclasses.dataclass
class DestCase:
    """One destination under contract, with the means to look behind it.

    `stored()` reads what the destination really holds (not through `read_keys`); `refuse(rec)`
    makes a record this destination refuses on its own; `child_rows()` (where it takes children)
    reads the child rows by parent key."""

    name: str
    dest: Destination
    stored: Callable[[], Stored]
    refuse: Callable[[records.Mapped], records.Mapped]
    prefix: str = dataclasses.field(default_factory=uid)
    child_rows: Callable[[], dict[str, list[dict[str, Any]]]] | None = None
    knows_empty: bool = True  # False: `is_empty` never claims (an API: asking costs a call)
    server_takes_deletes: bool = True  # False: the server behind it answers DELETE with an error
    variant: Callable[[str], Destination] | None = None  # the same sync with other `deletes`/`children`
    close: Callable[[], None] = lambda: None


def record(
    key: str, nm: Any = "Name", status: str = "1", op: str = "upsert", children: Any = None
) -> records.Mapped:
    values = {"ref_id": key} if op == "delete" else {"ref_id": key, "nm": nm, "status": status}
    return records.Mapped(op, (key,), (key,), 1, values, dict(children or {}), hash=f"{key}:{nm}")  # type: ignore[arg-type]


def memory_dest() -> DestCase:
    dest = MemoryDestination()

    def refuse(rec: records.Mapped) -> records.Mapped:
        dest.reject(rec.dest_key, message="refused by the memory destination")
        return rec

    def child_rows() -> dict[str, list[dict[str, Any]]]:
        return {k[0]: rows for k, rows in dest.children.get("lines", {}).items()}

    return DestCase(
        "memory", dest, lambda: {k[0]: dict(r) for k, r in dest.rows.items()}, refuse, child_rows=child_rows
    )


SQL_DEST_SHEET = """
version: 1
connections:
  src: {{url: "sqlite:///{folder}/unused.db"}}
  dst: {dst}
syncs:
  things:
    from: {{connection: src, table: things}}
    to: {{connection: dst, table: {table}}}
    key: {{from: id, to: ref_id}}
    fields: {{nm: name, status: status}}
    changes: {{method: snapshot}}
    deletes: {{policy: hard}}
    children:
      lines:
        from: {{connection: src, table: lines}}
        to: {{connection: dst, table: {table}_lines}}
        parent: {{from: thing_id, to: ref_id}}
        key: {{from: [thing_id, line_no], to: [ref_id, line_no]}}
        fields: {{qty: qty}}
"""


def sql_dest(url: str, folder: Path) -> DestCase:
    table = f"things_{uid()}"
    raw = sql_url(url)
    sql_execute(
        raw,
        f"CREATE TABLE {table} (ref_id VARCHAR(40) PRIMARY KEY, nm VARCHAR(100) NOT NULL, status VARCHAR(5))",
        f"CREATE TABLE {table}_lines (ref_id VARCHAR(40) NOT NULL, line_no INTEGER NOT NULL, qty INTEGER, "
        "PRIMARY KEY (ref_id, line_no))",
    )
    built = build(folder, SQL_DEST_SHEET.format(folder=folder, dst=sql_connection(url), table=table))
    dest = built.destination()

    def stored() -> Stored:
        return {r["ref_id"]: r for r in sql_query(raw, f"SELECT ref_id, nm, status FROM {table}")}

    def child_rows() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in sql_query(raw, f"SELECT ref_id, line_no, qty FROM {table}_lines ORDER BY ref_id, line_no"):
            out.setdefault(r["ref_id"], []).append(r)
        return out

    def refuse(rec: records.Mapped) -> records.Mapped:  # NULL into a NOT NULL column
        return dataclasses.replace(rec, values={**rec.values, "nm": None})

    return DestCase(
        sa.make_url(url).get_backend_name(), dest, stored, refuse, child_rows=child_rows, close=built.close
    )


API_DEST_SHEET = """
version: 1
connections:
  src: {{url: "sqlite:///{folder}/unused.db"}}
  api: {api}
syncs:
  things:
    from: {{connection: src, table: things}}
    to: {{connection: api, resource: account}}
    key: {{from: id, to: ref_id}}
    fields: {{nm: name, status: status}}
    changes: {{method: snapshot}}
    deletes: {deletes}
{extra}"""

CHILDREN = """    children:
      lines:
        from: {connection: src, table: lines}
        to: {connection: api, resource: lines}
        parent: {from: thing_id, to: ref_id}
        key: {from: [thing_id, line_no], to: [ref_id, line_no]}
        fields: {qty: qty}
"""


def api_dest(kind: str, box: Running, folder: Path) -> DestCase:
    api = cim_connection(box) if kind == "cimcloud" else rest_connection(box)
    deletes = "{policy: disable, field: status, value: '0'}" if kind == "cimcloud" else "{policy: hard}"
    built = build(folder, API_DEST_SHEET.format(folder=folder, api=api, deletes=deletes, extra=""))

    def refused_by_site(rec: records.Mapped) -> records.Mapped:  # CIMcloud sends every value as text
        box.sandbox.faults.reject[str(rec.dest_key[0])] = "nm is invalid"
        return rec

    refuse = refused_by_site if kind == "cimcloud" else _nested
    case = DestCase(kind, built.destination(), lambda: {}, refuse, knows_empty=False, close=built.close)
    case.server_takes_deletes = False  # the sandbox answers DELETE with 405 (CIMcloud documents none)

    def stored() -> Stored:
        rows = box.sandbox.store.all("accounts")
        return {r["ref_id"]: r for r in rows if str(r["ref_id"]).startswith(case.prefix)}

    def variant(what: str) -> Destination:
        """`hard`: hard deletes asked for; `children`: child rows asked for."""
        deleting = "{policy: hard}" if what == "hard" else deletes
        extra = CHILDREN if what == "children" else ""
        sub = folder / what
        sub.mkdir(exist_ok=True)
        other = build(sub, API_DEST_SHEET.format(folder=folder, api=api, deletes=deleting, extra=extra))
        made = other.destination()
        other.close()
        return made

    case.stored, case.variant = stored, variant
    return case


def _nested(rec: records.Mapped) -> records.Mapped:
    """A nested value, which the sandbox refuses (HTTP 400) like CIMcloud does."""
    return dataclasses.replace(rec, values={**rec.values, "nm": {"nested": True}})


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass
class SourceCase:
    """One source under contract: `add(rows)` puts rows (`key`, `name`) where it reads."""

    name: str
    source: Source
    add: Callable[[list[tuple[str, str]]], None]
    key: str  # the source's key column
    name_column: str
    counts: bool = True  # False: `count` answers None (an API documenting no total)
    close: Callable[[], None] = lambda: None


def memory_source() -> SourceCase:
    source = MemorySource(key=("id",), version=None)
    return SourceCase(
        "memory", source, lambda rows: source.upsert(*({"id": k, "name": n} for k, n in rows)), "id", "name"
    )


SQL_SOURCE_SHEET = """
version: 1
connections:
  src: {src}
  dst: {{url: "sqlite:///{folder}/unused.db"}}
syncs:
  things:
    from: {{connection: src, table: {table}}}
    to: {{connection: dst, table: things}}
    key: {{from: id, to: ref_id}}
    fields: {{nm: name}}
    changes: {{method: full}}
"""


def sql_source(url: str, folder: Path) -> SourceCase:
    table = f"src_{uid()}"
    raw = sql_url(url)
    sql_execute(raw, f"CREATE TABLE {table} (id VARCHAR(40) PRIMARY KEY, name VARCHAR(100))")
    built = build(folder, SQL_SOURCE_SHEET.format(folder=folder, src=sql_connection(url), table=table))

    def add(rows: list[tuple[str, str]]) -> None:
        sql_execute(raw, f"INSERT INTO {table} VALUES (:k, :n)", params=[{"k": k, "n": n} for k, n in rows])

    return SourceCase(
        sa.make_url(url).get_backend_name(), built.source(), add, "id", "name", close=built.close
    )


CIM_SOURCE_SHEET = """
version: 1
connections:
  cim: {cim}
  dst: {{url: "sqlite:///{folder}/unused.db"}}
syncs:
  things:
    from: {{connection: cim, resource: accounts}}
    to: {{connection: dst, table: things}}
    key: {{from: ref_id, to: customer_no}}
    fields: {{name: nm}}
    changes: {{method: full}}
"""


def cim_source(box: Running, folder: Path) -> SourceCase:
    built = build(folder, CIM_SOURCE_SHEET.format(folder=folder, cim=cim_connection(box)))

    def add(rows: list[tuple[str, str]]) -> None:
        for key, name in rows:
            box.sandbox.store.upsert("accounts", "ref_id", {"ref_id": key, "nm": name}, update_only=False)

    return SourceCase("cimcloud", built.source(), add, "ref_id", "nm", counts=False, close=built.close)
