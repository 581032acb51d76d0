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
    from mapsync.testing.sandbox_serve import InProcess, Running

    Box = InProcess | Running

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


def cim_connection(box: Box) -> str:
    return (
        f'{{kind: cimcloud, base_url: "{box.base_url}", site: sandbox, budget: [], '
        'auth: {type: token, auth_key: "${CIM_KEY}", username: sandbox, password: "${CIM_PASSWORD}"}, '
        "retry: {attempts: 1}}"
    )


def rest_connection(box: Box, extra: str = "") -> str:
    return (
        f'{{kind: rest, base_url: "{box.base_url}/sandbox/", {extra}'
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


def api_dest(kind: str, box: Box, folder: Path) -> DestCase:
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
    # where it takes children: put child rows `lines` (parent key, line_no, qty) where it reads
    add_lines: Callable[[list[tuple[str, int, int]]], None] | None = None
    variant: Callable[[str], Source] | None = None  # the same sync with `children`


Line = tuple[str, int, int]
SOURCE_CHILDREN = """    children:
      lines:
        from: {{connection: {src}, {what}: {table}}}
        to: {{connection: dst, table: things_lines}}
        parent: {{from: thing_id, to: {parent}}}
        key: {{from: [thing_id, line_no], to: [{parent}, line_no]}}
        fields: {{qty: qty}}
"""


def memory_source() -> SourceCase:
    source = MemorySource(key=("id",), version=None, children={"lines": (["thing_id"], [])})

    def add_lines(lines: list[Line]) -> None:
        source.children["lines"][1].extend({"thing_id": k, "line_no": n, "qty": q} for k, n, q in lines)

    return SourceCase(
        "memory",
        source,
        lambda rows: source.upsert(*({"id": k, "name": n} for k, n in rows)),
        "id",
        "name",
        add_lines=add_lines,
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
    sql_execute(
        raw,
        f"CREATE TABLE {table} (id VARCHAR(40) PRIMARY KEY, name VARCHAR(100))",
        f"CREATE TABLE {table}_lines (thing_id VARCHAR(40) NOT NULL, line_no INTEGER NOT NULL, qty INTEGER, "
        "PRIMARY KEY (thing_id, line_no))",
    )
    children = SOURCE_CHILDREN.format(src="src", what="table", table=f"{table}_lines", parent="ref_id")
    text = SQL_SOURCE_SHEET.format(folder=folder, src=sql_connection(url), table=table) + children
    built = build(folder, text)

    def add(rows: list[tuple[str, str]]) -> None:
        sql_execute(raw, f"INSERT INTO {table} VALUES (:k, :n)", params=[{"k": k, "n": n} for k, n in rows])

    def add_lines(lines: list[Line]) -> None:
        params = [{"k": k, "n": n, "q": q} for k, n, q in lines]
        sql_execute(raw, f"INSERT INTO {table}_lines VALUES (:k, :n, :q)", params=params)

    return SourceCase(
        sa.make_url(url).get_backend_name(),
        built.source(),
        add,
        "id",
        "name",
        close=built.close,
        add_lines=add_lines,
    )


API_SOURCE_SHEET = """
version: 1
connections:
  api: {api}
  dst: {{url: "sqlite:///{folder}/unused.db"}}
syncs:
  things:
    from: {{connection: api, resource: accounts}}
    to: {{connection: dst, table: things}}
    key: {{from: ref_id, to: customer_no}}
    fields: {{name: nm}}
    changes: {{method: full}}
"""

# the generic REST connector reads the sandbox's query dialect (`?page=&per_page=`, `?keys=`):
# 10 per page, so 25 records take three calls
REST_SOURCE = "paging: {style: page, size: 10, size_param: per_page, page_param: page}, key_param: keys, "


def api_source(kind: str, box: Box, folder: Path) -> SourceCase:
    """The REST source (generic) or CIMcloud's (searchstrings, 50 per page) over the sandbox's
    `accounts`."""
    api = cim_connection(box) if kind == "cimcloud" else rest_connection(box, REST_SOURCE)
    built = build(folder, API_SOURCE_SHEET.format(folder=folder, api=api))

    def add(rows: list[tuple[str, str]]) -> None:
        for key, name in rows:
            box.sandbox.store.upsert("accounts", "ref_id", {"ref_id": key, "nm": name}, update_only=False)

    def variant(what: str) -> Source:
        """`children`: child rows asked for (from another resource of the API)."""
        sub = folder / what
        sub.mkdir(exist_ok=True)
        extra = SOURCE_CHILDREN.format(src="api", what="resource", table="lines", parent="customer_no")
        other = build(sub, API_SOURCE_SHEET.format(folder=folder, api=api) + extra)
        made = other.source()
        other.close()
        return made

    case = SourceCase(kind, built.source(), add, "ref_id", "nm", counts=False, close=built.close)
    case.variant = variant
    return case
