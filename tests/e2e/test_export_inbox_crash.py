"""kill -9 of the CIMcloud order export (issue 17) at every crash point, then a rerun, into a
PostgreSQL and a MariaDB ERP.

The CIMcloud sandbox (a real socket: the same sandbox serves the in-process runs and the real
processes) holds 15 orders of 2 lines each, nested under `details` in the `OnlineOrders` answer.
One destructive GET returns all 15 (a page holds 50) and marks them exported; the capture stores
the raw page in the inbox (`page:`), splits it into one item per order and delivers them in
batches of 5 into `sales_orders` / `sales_order_lines`, whose `doc_no` (an identity column) is the
ERP's document number written back with the status. The run dies at one point of `crash.POINTS`,
`crash.EXPORT_POINTS` or `crash.DESTRUCTIVE_POINTS`: in the 2nd batch for the per-batch points, at
the only GET for the destructive ones (`_nth`). What the crash left is checked first, then a rerun
without the crash finishes. Oracles, on the real rows:

- exactly one ERP order per CIMcloud order (counted by the natural key), its 2 lines, their
  quantities and amounts as CIMcloud has them;
- every CIMcloud order `exported = '1'`, `erp_import_status = 'success'`, no error and the ERP's
  `doc_no` as `erp_order_number`;
- no order item is left `new` in the inbox, and a further run writes nothing.

`during_error_record` passes only when the ERP refuses an order: that case alone adds one (a
negative total, refused by a CHECK) in the 2nd batch, which ends `failed` with the ERP's message
and an open record error (its inbox item stays `new` until the state commit keeps that error).

`after_get` loses the GET's answer: the orders are marked exported at CIMcloud and nothing was
stored (but the GET's `lost:` marker, left `new`), so no later GET returns them; the rerun
delivers nothing and the test says so. The lost-order sweep (`mapsync sweep`) sets such orders pending again; its own test covers that path,
here the test sets them pending through the sandbox's store, and the next run delivers each once.

The named test kills the run between the GET and the ERP insert (after_page_stored, after_read,
during_write at their 1st pass) on both ERPs. Tiers: the module is `slow`; that test and a few
points per ERP (`DEFAULT`) run by default, the rest of the matrix is `campaign`. The real-SIGKILL cases (`python -m mapsync` killing itself) cover
after_page_stored, after_write, during_writeback and after_ack, the ERPs in turn.
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
from mapsync.capture.export_inbox import LOST
from mapsync.engine import Engine
from mapsync.rest.destructive_source import ORDER, PAGE
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing.sandbox_serve import Running
from tests import helpers as h

N = 15  # CIMcloud orders
BATCH = 5
SYNC = "web_orders"
ENV = {"CIM_PASSWORD": "sandbox-password"}
POINTS = (*crash.POINTS, *crash.EXPORT_POINTS, *crash.DESTRUCTIVE_POINTS)
FIRST, SECOND, THIRD = range(1, 6), range(6, 11), range(11, 16)
REFUSED = 7  # only in the during_error_record case: a negative total in the 2nd batch
CENT = decimal.Decimal("0.01")

# What the crash leaves of the 2nd batch: the ERP committed it (all but these) ...
NOT_WRITTEN = {"after_read", "during_write"}
# ... and its status was written back to CIMcloud (the acknowledge runs before the state commit)
MARKED = {"after_ack", "after_commit", "during_state_write", "during_error_record", "during_writeback"}

pytestmark = pytest.mark.slow

ERPS: dict[str, tuple[str, tuple[pytest.MarkDecorator, ...]]] = {
    "pg": ("pg_database", (pytest.mark.postgres,)),
    "maria": ("mariadb_database", (pytest.mark.mariadb,)),
}
_IDENTITY = {"postgresql": "SERIAL PRIMARY KEY", "mysql": "INTEGER AUTO_INCREMENT PRIMARY KEY"}

# the default tier: these points in process on each ERP, and these killed for real
# the default tier (the suite's 5-minute budget): these in-process points on one ERP each, two
# real SIGKILLs, the named test at two points; `campaign` (also run by .ci/run) takes the rest
DEFAULT = {("pg", "during_writeback"), ("maria", "after_get"), ("pg", "during_error_record")}
SIGKILL = {"after_page_stored": "pg", "after_write": "maria", "during_writeback": "pg", "after_ack": "maria"}
SIGKILL_DEFAULT = {"after_page_stored", "after_ack"}
NAMED_DEFAULT = {("pg", "after_page_stored"), ("maria", "during_write")}


# --------------------------------------------------------------------------- the world


def _number(i: int) -> str:
    return f"W{i:04d}"


def _lines(i: int) -> list[dict[str, str]]:
    return [{"sku": f"SKU-{i}-{n}", "quantity": str(n + i % 3), "price": f"{i}.{n}5"} for n in (1, 2)]


def _total(i: int) -> decimal.Decimal:
    return sum((decimal.Decimal(x["quantity"]) * decimal.Decimal(x["price"]) for x in _lines(i)), CENT * 0)


def _build(erp: str) -> None:
    h.execute(
        erp,
        f"CREATE TABLE sales_orders (doc_no {_IDENTITY[h.dialect(erp)]}, "
        "order_no VARCHAR(20) NOT NULL UNIQUE, customer VARCHAR(40) NOT NULL, "
        "total NUMERIC(10,2) NOT NULL, CONSTRAINT total_positive CHECK (total >= 0))",
        "CREATE TABLE sales_order_lines (order_no VARCHAR(20) NOT NULL, line_no INTEGER NOT NULL, "
        "sku VARCHAR(20) NOT NULL, qty NUMERIC(10,2) NOT NULL, price NUMERIC(10,2) NOT NULL, "
        "PRIMARY KEY (order_no, line_no))",
    )


def _orders(box: Running, refused: bool) -> None:
    for i in range(1, N + 1):
        total = "-1.00" if refused and i == REFUSED else str(_total(i))
        box.sandbox.add_order(
            {"c_ordnum": _number(i), "customer": f"Kunde {i:02d} Müller", "total": total}, _lines(i)
        )


def _sheet(folder: Path, box: Running, erp: str) -> Path:
    sheet = {
        "version": 1,
        "connections": {
            "erp": {"url": erp, "timezone": "UTC"},
            "cim": {
                "kind": "cimcloud",
                "base_url": box.base_url,
                "site": "sandbox",
                "auth": {
                    "type": "token",
                    "auth_key": "sandbox-key",
                    "username": "sandbox",
                    "password": "${CIM_PASSWORD}",
                },
                "budget": [],
            },
        },
        "syncs": {
            SYNC: {
                "from": {"connection": "cim", "resource": "OnlineOrders"},
                "to": {"connection": "erp", "table": "sales_orders"},
                "key": {"from": "c_ordnum", "to": "order_no"},
                "fields": {"customer": "customer", "total": {"from": "total", "cast": "decimal", "scale": 2}},
                "children": {
                    "lines": {
                        "from": {"connection": "cim", "nested": "details"},
                        "to": {"connection": "erp", "table": "sales_order_lines"},
                        "parent": {"from": "c_ordnum", "to": "order_no"},
                        "key": {"from": ["c_ordnum", "line_no"], "to": ["order_no", "line_no"]},
                        "fields": {
                            "sku": "sku",
                            "qty": {"from": "quantity", "cast": "decimal"},
                            "price": {"from": "price", "cast": "decimal"},
                        },
                    }
                },
                "changes": {
                    "method": "export_flag",
                    "flag": "exported",
                    "status": "erp_import_status",
                    "error": "erp_import_error",
                    "document": {"from": "doc_no", "to": "erp_order_number"},
                },
                "delivery": {"batch": BATCH},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(sheet, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def _open(sheet: Path) -> tuple[Any, StateStore]:
    loaded = loader.load(sheet, env=ENV)
    return loaded, StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)


def _seed(sheet: Path) -> None:
    """The seed records when the export starts and reads nothing (a GET would mark orders)."""
    loaded, store = _open(sheet)
    engine = Engine(loaded, store)
    try:
        report = engine.run(SYNC, "seed")
    finally:
        engine.close()
        store.close()
    assert report.counts.read == 0 and report.counts.written == 0, report


def _world(
    request: pytest.FixtureRequest, tmp_path: Path, erp_name: str, refused: bool = False
) -> tuple[Running, str, Path]:
    make: Callable[[], str] = request.getfixturevalue(ERPS[erp_name][0])
    box: Running = request.getfixturevalue("cimcloud_sandbox")
    erp = make()
    _build(erp)
    sheet = _sheet(tmp_path, box, erp)
    _seed(sheet)
    _orders(box, refused)
    return box, erp, sheet


# --------------------------------------------------------------------------- running it


def _run(sheet: Path, folder: Path) -> dict[str, Any]:
    ran = h.mapsync("run", str(sheet), "--sync", SYNC, "--json", cwd=folder, env=ENV)
    assert ran.returncode in (0, 1), (ran.returncode, ran.stdout, ran.stderr)
    reports = json.loads(ran.stdout)
    assert len(reports) == 1, ran.stderr
    report: dict[str, Any] = reports[0]
    return report


def _nth(point: str) -> int:
    """The GET happens once a run (15 orders < a page of 50): the destructive points die there;
    `during_error_record` passes only for the refused order (2nd batch); the others once a batch."""
    return 1 if point in crash.DESTRUCTIVE_POINTS or point == "during_error_record" else 2


def _crash(sheet: Path, folder: Path, point: str, sigkill: bool, nth: int | None = None) -> None:
    marker = folder / "crash.marker"
    nth = nth or _nth(point)
    env = {**ENV, "MAPSYNC_CRASH_AT": f"{point}:{nth}", "MAPSYNC_CRASH_MARKER": str(marker)}
    crashed = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=folder, env=env, process=sigkill)
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.returncode, crashed.stdout, crashed.stderr)
    assert marker.read_text(encoding="utf-8") == f"{point}:{nth}\n"


# --------------------------------------------------------------------------- the oracles


def _cim(box: Running) -> dict[int, dict[str, Any]]:
    return {int(o["c_ordnum"][1:]): o for o in box.sandbox.orders()}


def _erp_orders(erp: str) -> dict[int, int]:
    """order number → how many ERP orders carry it."""
    rows = h.query(erp, "SELECT order_no, COUNT(*) FROM sales_orders GROUP BY order_no")
    return {int(str(o)[1:]): int(c) for o, c in rows}


def _new(sheet: Path, prefix: str) -> list[str]:
    """The event ids of the inbox items still `new` whose id starts with `prefix`."""
    _, store = _open(sheet)
    try:
        return [i.event_id for i in store.inbox.new_items(SYNC, 0, 1000) if i.event_id.startswith(prefix)]
    finally:
        store.close()


def _new_orders(sheet: Path) -> list[str]:
    return _new(sheet, ORDER)


def _assert_delivered_once(box: Running, erp: str, sheet: Path, refused: bool = False) -> None:
    accepted = {i for i in range(1, N + 1) if not (refused and i == REFUSED)}
    assert _erp_orders(erp) == dict.fromkeys(accepted, 1)
    heads = {
        int(str(o)[1:]): (c, decimal.Decimal(str(t)).quantize(CENT))
        for o, c, t in h.query(erp, "SELECT order_no, customer, total FROM sales_orders")
    }
    assert heads == {i: (f"Kunde {i:02d} Müller", _total(i)) for i in accepted}
    lines = h.query(
        erp,
        "SELECT order_no, COUNT(*), SUM(qty), SUM(qty * price) FROM sales_order_lines GROUP BY order_no",
    )
    got = {
        int(str(o)[1:]): (int(c), decimal.Decimal(str(q)), decimal.Decimal(str(s)).quantize(CENT))
        for o, c, q, s in lines
    }
    want = {i: (2, sum(decimal.Decimal(x["quantity"]) for x in _lines(i)), _total(i)) for i in accepted}
    assert got == want

    docs = {int(str(o)[1:]): str(d) for o, d in h.query(erp, "SELECT order_no, doc_no FROM sales_orders")}
    cim = _cim(box)
    assert set(cim) == set(range(1, N + 1))
    for i, order in sorted(cim.items()):
        status = (order.get("exported"), order.get("erp_import_status"), order.get("erp_order_number"))
        if i in accepted:
            assert status == ("1", "success", docs[i]) and not order.get("erp_import_error"), order
        else:
            assert status[:2] == ("1", "failed") and "total_positive" in order["erp_import_error"], order
    assert _new_orders(sheet) == []
    _, store = _open(sheet)
    try:  # a refused order is an open record error: `mapsync reexport` finds it
        assert store.open_error_keys(SYNC) == (
            [] if accepted == set(range(1, N + 1)) else [(_number(REFUSED),)]
        )
    finally:
        store.close()


def _assert_left_by_the_crash(box: Running, erp: str, sheet: Path, point: str) -> None:
    """The GET marked every order; the 1st batch is complete, the 2nd as far as `point`, the
    3rd waits in the inbox (the destructive points: nothing reached the ERP)."""
    cim = _cim(box)
    assert {o["exported"] for o in cim.values()} == {"1"}, cim
    held = set(_erp_orders(erp))
    statuses = {i: o.get("erp_import_status") for i, o in cim.items()}
    waiting = {json.loads(e[len(ORDER) :].rsplit(":", 1)[0])[0] for e in _new_orders(sheet)}
    if point in crash.DESTRUCTIVE_POINTS:
        assert not held and set(statuses.values()) == {None}, (held, statuses)
        assert waiting == set(), waiting  # after_get: nothing stored; after_page_stored: not split
        return
    assert set(FIRST) <= held and all(statuses[i] == "success" for i in FIRST), statuses
    second = {i for i in SECOND if i != REFUSED or point != "during_error_record"}
    assert second <= held if point not in NOT_WRITTEN else not second & held, held
    assert all(statuses[i] == ("success" if point in MARKED else None) for i in second), statuses
    assert not set(THIRD) & held and all(statuses[i] is None for i in THIRD), statuses
    # the items of the 2nd batch are settled only after its state commit (`Capture.committed`),
    # and every point of this matrix fires before that: the whole 2nd batch waits again
    unacknowledged = [*SECOND, *THIRD]
    if point == "during_error_record":
        assert statuses[REFUSED] == "failed", cim[REFUSED]  # written back, its error not yet kept
    assert waiting == {_number(i) for i in unacknowledged}, waiting


def _after_get_lost(box: Running, erp: str, sheet: Path, folder: Path) -> None:
    """The answer of the GET is gone: the rerun's GET finds nothing, the orders stay marked and
    undelivered; set pending again (what the sweep does), the next run delivers each once."""
    assert len(_new(sheet, LOST)) == 1  # the GET's marker: a sweep is due
    report = _run(sheet, folder)
    assert report["counts"]["written"] == 0, report
    assert len(_new(sheet, LOST)) == 1  # the rerun's own GET stored its (empty) page
    assert _erp_orders(erp) == {}
    assert all(o["exported"] == "1" and not o.get("erp_import_status") for o in _cim(box).values())
    for row in box.sandbox.store.all("orders"):
        box.sandbox.store.set_fields(int(row["key"]), {"exported": "0"})


# --------------------------------------------------------------------------- the cases


def _case(erp: str, point: str, how: str) -> Any:
    marks = list(ERPS[erp][1])
    if (how == "inprocess" and (erp, point) not in DEFAULT) or (
        how == "sigkill" and point not in SIGKILL_DEFAULT
    ):
        marks.append(pytest.mark.campaign)
    return pytest.param(erp, point, how, id=f"{erp}-{point}-{how}", marks=marks)


CASES = [_case(erp, p, "inprocess") for erp in ERPS for p in POINTS] + [
    _case(erp, p, "sigkill") for p, erp in SIGKILL.items()
]


@pytest.mark.parametrize(("erp_name", "point", "how"), CASES)
def test_export_inbox_crash_then_rerun_gives_one_order_and_a_true_status(
    request: pytest.FixtureRequest, tmp_path: Path, erp_name: str, point: str, how: str
) -> None:
    refused = point == "during_error_record"
    box, erp, sheet = _world(request, tmp_path, erp_name, refused)

    _crash(sheet, tmp_path, point, sigkill=how == "sigkill")
    _assert_left_by_the_crash(box, erp, sheet, point)
    if point == "after_get":
        _after_get_lost(box, erp, sheet, tmp_path)

    report = _run(sheet, tmp_path)
    assert report["status"] == ("partial" if refused else "success"), report
    _assert_delivered_once(box, erp, sheet, refused)

    again = _run(sheet, tmp_path)
    assert again["counts"]["written"] == 0 and again["counts"]["rejected"] == 0, again
    _assert_delivered_once(box, erp, sheet, refused)


@pytest.mark.parametrize(
    ("erp_name", "point"),
    [
        pytest.param(
            erp,
            point,
            id=f"{erp}-{point}",
            marks=[*marks, *([] if (erp, point) in NAMED_DEFAULT else [pytest.mark.campaign])],
        )
        for erp, (_, marks) in ERPS.items()
        for point in ("after_page_stored", "after_read", "during_write")
    ],
)
def test_a_crash_between_the_destructive_get_and_the_erp_insert_delivers_from_the_inbox_none_lost_none_doubled(
    request: pytest.FixtureRequest, tmp_path: Path, erp_name: str, point: str
) -> None:
    """The GET marked all 15 orders exported and nothing reached the ERP: the raw page (not
    split yet) or its 15 order items wait in the inbox, and the restart delivers each once."""
    box, erp, sheet = _world(request, tmp_path, erp_name)

    _crash(sheet, tmp_path, point, sigkill=False, nth=1)  # the GET's page, or the 1st batch
    assert {o["exported"] for o in _cim(box).values()} == {"1"}  # no later GET returns them
    assert _erp_orders(erp) == {}
    if point == "after_page_stored":
        assert (len(_new(sheet, PAGE)), _new_orders(sheet)) == (1, [])
    else:
        assert len(_new_orders(sheet)) == N and len(_new(sheet, PAGE)) == 0

    report = _run(sheet, tmp_path)
    assert report["status"] == "success" and report["counts"]["written"] == N, report
    _assert_delivered_once(box, erp, sheet)
    assert len(_new(sheet, PAGE)) == 0
    gets = [r for r in box.sandbox.store.requests() if "OnlineOrders" in r["path"]]
    assert len(gets) == 2, gets  # one GET a run: the restart's came back empty, nothing re-read
