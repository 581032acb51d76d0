"""The roles of mapsync.ports: every registered connector's handle, source and destination and
every capture method fills its role (mypy checks the same statically), the `Capabilities` each
declares are the truth the engine relies on, and no module asks a role what it has with
`getattr`/`hasattr`."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import capture, collisions, connectors, ports, records
from mapsync.capture.base import CaptureBase
from mapsync.rest.source import RestHandle
from mapsync.sheet import models
from mapsync.testing import fakes
from mapsync.testing.memory_destination import MemoryDestination

SRC = Path(__file__).resolve().parents[2] / "src" / "mapsync"

SYNC = {
    "from": {"connection": "src", "table": "items"},
    "to": {"connection": "dst", "table": "items_copy"},
    "key": {"from": "id", "to": "id"},
    "fields": {"name": "name"},
    "changes": {"method": "full"},
}
REST = {"kind": "rest", "base_url": "http://127.0.0.1:9/api", "key_param": "ids"}
CIMCLOUD = {
    "kind": "cimcloud",
    "base_url": "http://127.0.0.1:9",
    "site": "site",
    "auth": {"type": "basic", "username": "u", "password": "secret-pw"},
}


def members(role: type) -> set[str]:
    """The names a Protocol declares (its methods, properties and attributes)."""
    names: set[str] = set()
    for cls in role.__mro__:
        if cls in (typing.Protocol, typing.Generic, object):
            continue
        names |= {n for n in [*vars(cls), *getattr(cls, "__annotations__", {})] if not n.startswith("_")}
    return names


def fills(obj: object, role: type) -> list[str]:
    """The members of `role` that `obj` lacks (empty: it fills the role)."""
    return sorted(n for n in members(role) if not hasattr(obj, n))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("CREATE TABLE items_copy (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO items_copy VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
    engine.dispose()
    return url


def _ends(kind: str, sqlite_url: str, tmp_path: Path) -> tuple[Any, Any, Any]:
    conn: Any
    sync = dict(SYNC)
    if kind == "sql":
        conn = models.SqlConnection.model_validate({"url": sqlite_url})
    elif kind == "rest":
        conn = models.RestConnection.model_validate(REST)
        sync = {**SYNC, "from": {"connection": "src", "resource": "items"}}
        sync["to"] = {"connection": "dst", "resource": "items"}
    else:
        conn = models.CimcloudConnection.model_validate(CIMCLOUD)
        sync = {**SYNC, "from": {"connection": "src", "resource": "account"}}
        sync["to"] = {"connection": "dst", "resource": "account"}
    cfg = models.SyncConfig.model_validate(sync)
    connector = connectors.REGISTRY[kind]
    handle = connector.connect("src", conn, tmp_path)
    return (
        handle,
        connector.source(handle, "items", cfg, None),
        connector.destination(handle, "items", cfg, ()),
    )


@pytest.mark.parametrize("kind", sorted(connectors.REGISTRY))
def test_every_connector_builds_what_fills_the_roles(kind: str, sqlite_url: str, tmp_path: Path) -> None:
    handle, source, dest = _ends(kind, sqlite_url, tmp_path)
    try:
        assert fills(handle, ports.Handle) == []
        assert fills(source, ports.Source) == []
        assert fills(dest, ports.Destination) == []
        for part in (source, dest):  # declared on the class: data, not discovered
            assert isinstance(type(part).capabilities, ports.Capabilities)
        assert (handle.dialect is None) == (handle.engine is None) == (kind != "sql")
    finally:
        handle.close()


def test_the_capabilities_are_the_truth_of_todays_classes(sqlite_url: str, tmp_path: Path) -> None:
    got = {}
    for kind in sorted(connectors.REGISTRY):
        handle, source, dest = _ends(kind, sqlite_url, tmp_path)
        got[kind] = (source.capabilities, dest.capabilities)
        handle.close()
    sql_source, sql = got["sql"]
    assert sql.read_back and sql.key_probe and sql.deletes and sql.children and sql.version_guard
    assert not sql.async_jobs
    assert sql_source.read_back and sql_source.children and sql_source.server_side_hashing
    assert sql_source.columnar_read and sql.columnar_write  # the columnar seed (run_columnar.py)
    _, rest = got["rest"]
    assert rest.async_jobs and rest.deletes and not rest.key_probe and not rest.children
    _, cim = got["cimcloud"]
    assert cim.async_jobs and not cim.deletes  # CIMcloud documents no DELETE
    assert not (rest.columnar_write or cim.columnar_write or got["rest"][0].columnar_read)
    # what is coming is declared, and not claimed by anything built today
    for source_caps, dest_caps in got.values():
        for caps in (source_caps, dest_caps):
            assert not (caps.insert_if_absent or caps.destructive_read)


def test_a_sql_destination_reads_its_rows_back_by_key(sqlite_url: str, tmp_path: Path) -> None:
    handle, _, dest = _ends("sql", sqlite_url, tmp_path)
    try:
        rows = dest.read_keys([(3,), (1,), (9,)])
        assert sorted(rows, key=lambda r: r["id"]) == [{"id": 1, "name": "a"}, {"id": 3, "name": "c"}]
    finally:
        handle.close()
    memory = MemoryDestination()
    memory.rows[(1,)] = {"id": 1}
    assert memory.capabilities.read_back and memory.read_keys([(1,), (2,)]) == [{"id": 1}]


def test_an_api_destination_says_it_cannot_read_back(sqlite_url: str, tmp_path: Path) -> None:
    handle, _, dest = _ends("rest", sqlite_url, tmp_path)
    try:
        assert not dest.capabilities.read_back
        with pytest.raises(Exception, match="cannot read its rows back by key"):
            dest.read_keys([(1,)])
        assert dest.key_probe is None and dest.fell_back == 0
    finally:
        handle.close()


def test_the_handles_check_is_declared(tmp_path: Path, sqlite_url: str) -> None:
    """SQL: `mapsync check` runs its own query (None); CIMcloud: its own check, not REST's."""
    sql, _, _ = _ends("sql", sqlite_url, tmp_path)
    cim, _, _ = _ends("cimcloud", sqlite_url, tmp_path)
    try:
        assert sql.check() is None and sql.budget is None
        assert isinstance(cim, RestHandle) and type(cim).check is not RestHandle.check
        assert cim.budget is not None and cim.budget.remaining()["limits"]  # CIMcloud's default limits
    finally:
        sql.close()
        cim.close()


@pytest.mark.parametrize("method", sorted(capture.REGISTRY))
def test_every_capture_method_fills_the_role_and_agrees_with_the_sheet(method: str) -> None:
    cls = capture.REGISTRY[method]
    assert issubclass(cls, CaptureBase)  # type: ignore[arg-type]
    assert fills(cls, ports.Capture) == []
    assert fills(cls, capture.CaptureFactory) == []
    model = next(
        m for m in models.CHANGES_MODELS if m.model_fields["method"].annotation == typing.Literal[method]
    )
    # validate (the sheet's facts) and the guard (the class's) say the same about deletes
    assert cls.capabilities.emits_deletes == model.can_emit_deletes, method
    # a capture says it takes Arrow batches exactly when its seed is capture.base's (which reads
    # them); the others get no columnar plan, so their runs never load pyarrow
    assert cls.capabilities.columnar_read == (cls.seed_batches is CaptureBase.seed_batches), method
    samples = [{"method": method, "column": "ts"}, {"method": method, "column": "ts", "deletes_every": "1d"}]
    if method == "export_flag":
        samples = [{"method": method, "flag": "exported"}, {"method": method, "flag": "x", "version": "v"}]
    for raw in samples if method in ("watermark", "export_flag") else [{"method": method}]:
        cfg: Any = model.model_validate(raw)
        assert cls.emits_deletes(cfg) == cfg.emits_deletes(), (method, raw)


def test_the_memory_parts_fill_the_roles() -> None:
    source = fakes.MemorySource([{"id": 1, "version": 1}])
    assert fills(source, ports.Source) == []
    assert fills(fakes.MemoryCapture(source, 10), ports.Capture) == []
    assert fills(MemoryDestination(), ports.Destination) == []


class _Probe:
    active, qualified, description = True, "t", "k"

    def probe(self, keys: list[records.Key]) -> list[Any]:
        raise AssertionError("a destination without the capability is never probed")


def test_collisions_probe_only_where_the_capability_says_so() -> None:
    dest = MemoryDestination()
    dest.key_probe = _Probe()  # present, but not declared: not used
    send = [records.Mapped("upsert", (1,), ("A",), None, {"k": "A"})]
    assert collisions.collisions(dest, send, {}, None, "s") == (send, [])


# getattr/hasattr whose object is a role (or its handle, capture, context): none is allowed
ROLE_NAMES = {"parts", "capture", "dest", "destination", "source", "handle", "db", "connector", "part"}
ROLE_NAMES |= {"auth", "budget", "probe", "method", "ctx", "item", "cls"}
ALLOWED: set[tuple[str, str, str]] = set()
# getattr(obj, "name" …), hasattr(obj, …), getattr(getattr(obj, "name" …) …), getattr(type(obj), …)
_CALL = re.compile(
    r"\b(?:getattr|hasattr)\((?:\s*(?:getattr|type)\()?\s*([A-Za-z_][\w.]*)\)?\s*,\s*[\"']([^\"']+)[\"']"
)


def role_lookups(text: str, path: str) -> set[tuple[str, str, str]]:
    return {(path, m[1], m[2]) for m in _CALL.finditer(text) if m[1].split(".")[0] in ROLE_NAMES}


def test_no_module_asks_a_role_what_it_has() -> None:
    found = set()
    for path in SRC.rglob("*.py"):
        if path.parent.name == "sheet":  # the sheet's pydantic models (an `auth:` block): no roles
            continue
        found |= role_lookups(path.read_text(), str(path.relative_to(SRC)))
    assert found - ALLOWED == set(), "declare it in the role or its Capabilities instead"


def test_the_lookup_finder_finds_them() -> None:
    text = """
        dialect = getattr(getattr(handle, "engine", None), "dialect", None)
        emits = getattr(type(capture), 'emits_deletes', None)
        if hasattr(parts.dest, "begin"):
        length = getattr(col.type, "length", None)
    """
    assert role_lookups(text, "x.py") == {
        ("x.py", "handle", "engine"),
        ("x.py", "capture", "emits_deletes"),
        ("x.py", "parts.dest", "begin"),
    }
