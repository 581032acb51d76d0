"""kill -9 of a transaction export (issue 16) at every crash point, then a rerun, on real databases.

A portal's orders (header + lines, `changes: {method: export_flag}`) go into an ERP whose
`erp_orders` numbers each order itself (`doc_no`, an identity column) and refuses a zip code that
is not 5 characters long (a CHECK constraint): one or two such orders in every batch. The export
runs in batches of 5 (15 orders) and dies at one point of `crash.POINTS` or `crash.EXPORT_POINTS`
(`during_writeback`: the delivered rows of the batch written back, the refused ones not yet) in
the 2nd batch (`_nth`; what the crash left is checked first: the 1st batch complete, the 2nd as
far as the point, the 3rd untouched); a rerun without the crash finishes. Oracles, on the real rows:

- exactly one ERP order per portal order that the ERP accepts, none for a refused one (counted by
  the natural key), its lines complete and none doubled;
- every portal order has a true status: flag `done`, `success`, no error and the ERP's document
  number (the `doc_no` of its ERP row) for the delivered ones; flag still pending, `failed` and
  the ERP's CHECK message for the refused ones;
- a further run exports nothing again.

Backends (portal → ERP): PostgreSQL → MariaDB, MariaDB → PostgreSQL, SQLite → SQLite. Every case
dies in-process (`mapsync.crash` raise mode, tests/cli_runner.py); the real-SIGKILL subset
(`python -m mapsync` as a process that SIGKILLs itself) kills every point once, the backends in
turn (`_real_kill`): PostgreSQL → MariaDB after_read, after_commit, during_error_record; MariaDB →
PostgreSQL after_write, during_write, during_writeback; SQLite after_ack, during_state_write. One more case per backend: `on_exists: skip`, killed after the ERP committed
the 2nd batch (after_write): the rerun finds the ERP holding exactly what mapsync wrote, so it
writes back `success`, not `skipped`.
"""

from __future__ import annotations

import decimal
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync import crash
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

N = 15  # portal orders
BATCH = 5
SYNC = "orders"
REFUSED = {2, 7, 8, 12}  # a 4-character zip: one or two in every batch of 5
POINTS = (*crash.POINTS, *crash.EXPORT_POINTS)
DONE, PENDING = 1, 0
FIRST, SECOND = range(1, BATCH + 1), range(BATCH + 1, 2 * BATCH + 1)

# What the crash leaves of the 2nd batch: the ERP committed it (every point but these two) ...
NOT_WRITTEN = {"after_read", "during_write"}
# ... its delivered orders were written back (the source acknowledged: after_ack and later, and
# during_writeback, between the delivered orders and the refused ones) ...
MARKED = {"after_ack", "after_commit", "during_state_write", "during_error_record", "during_writeback"}
# ... and its refused orders too
REFUSED_MARKED = MARKED - {"during_writeback"}

pytestmark = pytest.mark.slow

# portal backend, ERP backend, marks
PAIRS: dict[str, tuple[str, str, tuple[pytest.MarkDecorator, ...]]] = {
    "pg-maria": ("pg_database", "mariadb_database", (pytest.mark.postgres, pytest.mark.mariadb)),
    "maria-pg": ("mariadb_database", "pg_database", (pytest.mark.postgres, pytest.mark.mariadb)),
    "sqlite": ("sqlite_database", "sqlite_database", ()),
}

# the ERP's own order number: an identity column next to the natural key (unique)
_ERP_ORDERS = {
    "postgresql": "doc_no SERIAL PRIMARY KEY, order_ref INTEGER NOT NULL UNIQUE",
    "mysql": "doc_no INTEGER AUTO_INCREMENT PRIMARY KEY, order_ref INTEGER NOT NULL UNIQUE",
    "sqlite": "doc_no INTEGER PRIMARY KEY AUTOINCREMENT, order_ref INTEGER NOT NULL UNIQUE",
}
_LENGTH = {"postgresql": "length", "mysql": "char_length", "sqlite": "length"}


# --------------------------------------------------------------------------- the world


def _build(src: str, dst: str) -> None:
    h.execute(
        src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer VARCHAR(40) NOT NULL, "
        "zip VARCHAR(10) NOT NULL, total NUMERIC(10,2) NOT NULL, exported INTEGER, "
        "erp_import_status VARCHAR(20), erp_import_error VARCHAR(500), erp_order_number INTEGER)",
        "CREATE TABLE order_lines (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20) NOT NULL, qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))",
    )
    d = h.dialect(dst)
    h.execute(
        dst,
        f"CREATE TABLE erp_orders ({_ERP_ORDERS[d]}, customer VARCHAR(40) NOT NULL, "
        "zip VARCHAR(10) NOT NULL, total NUMERIC(10,2) NOT NULL, "
        f"CONSTRAINT zip_len CHECK ({_LENGTH[d]}(zip) = 5))",
        "CREATE TABLE erp_order_lines (order_ref INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20) NOT NULL, qty INTEGER NOT NULL, PRIMARY KEY (order_ref, line_no))",
    )


def _orders(src: str) -> None:
    """The orders placed after the seed: pending (flag NULL or 0), 1 to 3 lines each."""
    d = h.dialect(src)
    h.execute(
        src,
        "INSERT INTO orders (id, customer, zip, total, exported) "
        "VALUES (:id, :customer, :zip, :total, :exported)",
        params=[
            {
                "id": i,
                "customer": f"Kunde {i:02d} Müller",
                "zip": "1234" if i in REFUSED else f"{10000 + i * 7:05d}",
                "total": str(decimal.Decimal(i * 1234) / 100)
                if d == "sqlite"
                else decimal.Decimal(i * 1234) / 100,
                "exported": None if i % 2 else PENDING,
            }
            for i in range(1, N + 1)
        ],
    )
    h.execute(
        src,
        "INSERT INTO order_lines (order_id, line_no, sku, qty) VALUES (:o, :n, :s, :q)",
        params=[
            {"o": i, "n": n, "s": f"SKU-{i}-{n}", "q": i + n} for i in range(1, N + 1) for n in _line_nos(i)
        ],
    )


def _line_nos(order: int) -> range:
    return range(1, order % 3 + 2)


def _sheet(folder: Path, src: str, dst: str, on_exists: str = "update") -> Path:
    sheet = {
        "version": 1,
        "connections": {
            "portal": {"url": src, "timezone": "UTC"},
            "erp": {"url": dst, "timezone": "UTC"},
        },
        "syncs": {
            SYNC: {
                "from": {"connection": "portal", "table": "orders"},
                "to": {"connection": "erp", "table": "erp_orders"},
                "key": {"from": "id", "to": "order_ref"},
                "fields": {"customer": "customer", "zip": "zip", "total": "total"},
                "children": {
                    "lines": {
                        "from": {"connection": "portal", "table": "order_lines"},
                        "to": {"connection": "erp", "table": "erp_order_lines"},
                        "parent": {"from": "order_id", "to": "order_ref"},
                        "key": {"from": ["order_id", "line_no"], "to": ["order_ref", "line_no"]},
                        "fields": {"sku": "sku", "qty": "qty"},
                    }
                },
                "changes": {
                    "method": "export_flag",
                    "flag": "exported",
                    "status": "erp_import_status",
                    "error": "erp_import_error",
                    "document": {"from": "doc_no", "to": "erp_order_number"},
                    "on_exists": on_exists,
                },
                "delivery": {"batch": BATCH},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(sheet, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def _seed(sheet: Path) -> None:
    """A clean seed in this process: it records the starting point and exports nothing."""
    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    try:
        report = engine.run(SYNC, "seed")
    finally:
        engine.close()
        store.close()
    assert report.counts.written == 0, report


# --------------------------------------------------------------------------- the oracles


def _portal(src: str) -> dict[int, tuple[Any, ...]]:
    """id → (flag, status, error, document number)."""
    rows = h.query(
        src, "SELECT id, exported, erp_import_status, erp_import_error, erp_order_number FROM orders"
    )
    return {int(r[0]): (r[1], r[2], r[3], r[4]) for r in rows}


def _assert_true_statuses(src: str, dst: str) -> None:
    # exactly one ERP order per accepted portal order, counted by the natural key
    counts = dict(h.query(dst, "SELECT order_ref, COUNT(*) FROM erp_orders GROUP BY order_ref"))
    accepted = set(range(1, N + 1)) - REFUSED
    assert {int(k): int(v) for k, v in counts.items()} == dict.fromkeys(accepted, 1)
    # the header as the portal has it
    want = {
        int(i): (c, z, decimal.Decimal(str(t)).quantize(decimal.Decimal("0.01")))
        for i, c, z, t in h.query(src, "SELECT id, customer, zip, total FROM orders")
        if int(i) in accepted
    }
    got = {
        int(i): (c, z, decimal.Decimal(str(t)).quantize(decimal.Decimal("0.01")))
        for i, c, z, t in h.query(dst, "SELECT order_ref, customer, zip, total FROM erp_orders")
    }
    assert got == want
    # the lines complete, none doubled, none of a refused order
    lines = sorted(
        (int(o), int(n), s, int(q))
        for o, n, s, q in h.query(dst, "SELECT order_ref, line_no, sku, qty FROM erp_order_lines")
    )
    assert lines == sorted((i, n, f"SKU-{i}-{n}", i + n) for i in accepted for n in _line_nos(i))

    # a true status on every portal order; the document number is the ERP row's
    docs = {int(r): int(d) for r, d in h.query(dst, "SELECT order_ref, doc_no FROM erp_orders")}
    portal = _portal(src)
    assert set(portal) == set(range(1, N + 1))
    for i, (flag, status, error, number) in sorted(portal.items()):
        if i in REFUSED:
            assert flag in (None, PENDING) and status == "failed" and number is None, (i, portal[i])
            assert error and "zip_len" in error, (i, error)  # the ERP's own message, named by it
        else:
            assert (flag, status, error, number) == (DONE, "success", None, docs[i]), (i, portal[i])


def _run(sheet: Path, folder: Path) -> dict[str, Any]:
    ran = h.mapsync("run", str(sheet), "--sync", SYNC, "--json", cwd=folder)
    assert ran.returncode in (0, 1), (ran.returncode, ran.stdout, ran.stderr)
    reports = json.loads(ran.stdout)
    assert len(reports) == 1, ran.stderr
    report: dict[str, Any] = reports[0]
    return report


def _calls(orders: list[int]) -> int:
    """The destination calls that succeed for these orders (`delivery.isolate` bisects a call
    the ERP refuses until each refused order stands alone): how often `during_write` passes."""
    if not set(orders) & REFUSED:
        return 1
    if len(orders) == 1:
        return 0
    mid = len(orders) // 2
    return _calls(orders[:mid]) + _calls(orders[mid:])


def _nth(point: str) -> int:
    """The pass of `point` that is the first of the 2nd batch: every other point passes once a
    batch (the 1st batch has refused orders: `during_error_record` passes there too)."""
    return _calls(list(FIRST)) + 1 if point == "during_write" else 2


def _crash(sheet: Path, folder: Path, point: str, sigkill: bool) -> None:
    """The export run dies at `point` in the 2nd batch (as by SIGKILL; a real one if `sigkill`)."""
    marker = folder / "crash.marker"
    nth = _nth(point)
    env = {"MAPSYNC_CRASH_AT": f"{point}:{nth}", "MAPSYNC_CRASH_MARKER": str(marker)}
    crashed = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=folder, env=env, process=sigkill)
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.returncode, crashed.stdout, crashed.stderr)
    assert marker.read_text(encoding="utf-8") == f"{point}:{nth}\n"


def _assert_left_by_the_crash(src: str, dst: str, point: str) -> None:
    """The 1st batch is complete, the 2nd as far as `point`, the 3rd untouched."""
    portal = _portal(src)
    held = {int(r) for (r,) in h.query(dst, "SELECT order_ref FROM erp_orders")}
    delivered = [i for i in SECOND if i not in REFUSED]
    refused = [i for i in SECOND if i in REFUSED]
    assert {i for i in FIRST if portal[i][1] == ("failed" if i in REFUSED else "success")} == set(FIRST)
    assert set(delivered) <= held if point not in NOT_WRITTEN else not set(delivered) & held, held
    assert all(portal[i][1] == ("success" if point in MARKED else None) for i in delivered), portal
    assert all(portal[i][1] == ("failed" if point in REFUSED_MARKED else None) for i in refused), portal
    assert not {i for i in range(2 * BATCH + 1, N + 1)} & held, "the 3rd batch was not reached"
    assert all(portal[i][1] is None for i in range(2 * BATCH + 1, N + 1)), portal


# --------------------------------------------------------------------------- the cases


def _real_kill(pair: str, point: str) -> bool:
    """The real-SIGKILL subset: each point once, the backend pairs in turn."""
    return list(PAIRS).index(pair) == POINTS.index(point) % len(PAIRS)


CASES = [
    pytest.param(pair, point, how, id=f"{pair}-{point}-{how}", marks=marks)
    for pair, (_, _, marks) in PAIRS.items()
    for point in POINTS
    for how in ("inprocess", "sigkill")
    if how == "inprocess" or _real_kill(pair, point)
]


def _databases(request: pytest.FixtureRequest, pair: str) -> tuple[str, str]:
    portal, erp, _ = PAIRS[pair]
    make_src: Callable[[], str] = request.getfixturevalue(portal)
    make_dst: Callable[[], str] = request.getfixturevalue(erp)
    return make_src(), make_dst()


def test_every_point_is_killed_for_real_once() -> None:
    real = [c.values[1] for c in CASES if c.values[2] == "sigkill"]
    assert sorted(real) == sorted(POINTS)
    assert "during_writeback" in real
    assert {c.values[0] for c in CASES if c.values[2] == "sigkill"} == set(PAIRS)


@pytest.mark.parametrize(("pair", "point", "how"), CASES)
def test_export_crash_then_rerun_gives_one_order_and_a_true_status(
    request: pytest.FixtureRequest, tmp_path: Path, pair: str, point: str, how: str
) -> None:
    src, dst = _databases(request, pair)
    _build(src, dst)
    sheet = _sheet(tmp_path, src, dst)
    _seed(sheet)
    _orders(src)

    _crash(sheet, tmp_path, point, sigkill=how == "sigkill")
    _assert_left_by_the_crash(src, dst, point)

    report = _run(sheet, tmp_path)
    assert report["status"] == "partial", report  # the refused orders are record errors
    _assert_true_statuses(src, dst)

    # nothing is pending any more but the refused orders, which wait for a retry or an edit
    again = _run(sheet, tmp_path)
    assert again["counts"]["written"] == 0 and again["counts"]["rejected"] == 0, again
    _assert_true_statuses(src, dst)


@pytest.mark.parametrize("pair", [pytest.param(p, id=p, marks=marks) for p, (_, _, marks) in PAIRS.items()])
def test_on_exists_skip_after_a_crash_writes_back_success(
    request: pytest.FixtureRequest, tmp_path: Path, pair: str
) -> None:
    """Killed after the ERP committed the 2nd batch: the rerun sends it again and finds the ERP
    holding exactly what mapsync wrote: that is no 'already imported' but its own delivery."""
    src, dst = _databases(request, pair)
    _build(src, dst)
    sheet = _sheet(tmp_path, src, dst, on_exists="skip")
    _seed(sheet)
    _orders(src)

    _crash(sheet, tmp_path, "after_write", sigkill=False)
    _assert_left_by_the_crash(src, dst, "after_write")  # the ERP committed the 2nd batch, unmarked

    report = _run(sheet, tmp_path)
    assert report["status"] == "partial", report
    _assert_true_statuses(src, dst)  # `success`, never `skipped`
