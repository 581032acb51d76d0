"""An order header and its lines travel as one unit, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  orders:
    from: {{connection: erp, table: orders}}
    to: {{connection: portal, table: web_orders}}
    key: {{from: order_no, to: ref}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 4}}
    fields:
      customer: customer_no
    children:
      lines:
        from: {{connection: erp, table: order_lines}}
        to: {{connection: portal, table: web_order_lines}}
        parent: {{from: order_no, to: order_ref}}
        key: {{from: [order_no, line_no], to: [order_ref, line]}}
        fields:
          sku: item_no
          qty: {{from: qty, cast: decimal}}
"""


def _setup(src: str, dst: str, folder: Path) -> None:
    ts = h.TS[h.dialect(src)]
    h.execute(
        src,
        f"CREATE TABLE orders (order_no VARCHAR(20) PRIMARY KEY, customer_no VARCHAR(20), last_modified {ts})",
        "CREATE TABLE order_lines (order_no VARCHAR(20), line_no INTEGER, item_no VARCHAR(20), qty NUMERIC(10,3),"
        " PRIMARY KEY (order_no, line_no))",
    )
    h.execute(
        dst,
        "CREATE TABLE web_orders (ref VARCHAR(20) PRIMARY KEY, customer VARCHAR(20))",
        "CREATE TABLE web_order_lines (order_ref VARCHAR(20), line INTEGER, sku VARCHAR(20), qty NUMERIC(10,3),"
        " PRIMARY KEY (order_ref, line))",
    )
    orders = [{"o": f"SO{i:02d}", "c": f"C{i % 3}", "t": "2026-01-01 10:00:00"} for i in range(10)]
    h.execute(src, "INSERT INTO orders VALUES (:o, :c, :t)", params=orders)
    lines = [
        {"o": f"SO{i:02d}", "n": n, "s": f"SKU{n}", "q": f"{n}.5"}
        for i in range(10)
        for n in range(1, i % 4 + 2)
    ]
    h.execute(src, "INSERT INTO order_lines VALUES (:o, :n, :s, :q)", params=lines)
    (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))


def _lines(url: str, table: str, cols: str) -> set[tuple[str, int, str, str]]:
    return {
        (r[0], int(r[1]), r[2], f"{float(r[3]):.3f}") for r in h.query(url, f"SELECT {cols} FROM {table}")
    }


def test_header_and_lines_arrive_together_and_follow_edits(
    database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = database(), database()
    _setup(src, dst, tmp_path)
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    want_cols = "order_no, line_no, item_no, qty"
    assert _lines(dst, "web_order_lines", "order_ref, line, sku, qty") == _lines(
        src, "order_lines", want_cols
    )
    assert h.query(dst, "SELECT COUNT(*) FROM web_orders")[0][0] == 10

    # SO03 loses line 2, changes line 1 and gains line 9; only its header's timestamp moves
    h.execute(
        src,
        "DELETE FROM order_lines WHERE order_no = 'SO03' AND line_no = 2",
        "UPDATE order_lines SET qty = 7 WHERE order_no = 'SO03' AND line_no = 1",
        "INSERT INTO order_lines VALUES ('SO03', 9, 'SKU9', 1)",
        "UPDATE orders SET last_modified = '2026-01-02 08:00:00' WHERE order_no = 'SO03'",
    )
    # the watermark recorded by the seed is "now": move it back so the edit is newer
    h.execute(
        f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}",
        "UPDATE mapsync_cursors SET value = :v WHERE name = 'watermark'",
        params={
            "v": '"2026-01-01 12:00:00"'
            if h.dialect(src) == "sqlite"
            else '{"datetime":"2026-01-01T12:00:00"}'
        },
    )
    ran = h.mapsync("run", "sheet.yaml", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"written": 1' in ran.stdout
    assert _lines(dst, "web_order_lines", "order_ref, line, sku, qty") == _lines(
        src, "order_lines", want_cols
    )


def test_crash_inside_the_write_leaves_no_header_without_lines(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), sqlite_database()
    _setup(src, dst, tmp_path)
    marker = tmp_path / "fired"
    crashed = h.mapsync(
        "seed",
        "sheet.yaml",
        cwd=tmp_path,
        env={"MAPSYNC_CRASH_AT": "during_write:2", "MAPSYNC_CRASH_MARKER": str(marker)},
        process=False,  # the crash point in-process (mapsync.crash); the crash matrix kills for real
    )
    assert crashed.returncode == -9
    assert marker.read_text().startswith("during_write:2")
    # the first batch (4 orders) committed with its lines; the second rolled back entirely
    headers = {r[0] for r in h.query(dst, "SELECT ref FROM web_orders")}
    with_lines = {r[0] for r in h.query(dst, "SELECT DISTINCT order_ref FROM web_order_lines")}
    assert headers == with_lines == {"SO00", "SO01", "SO02", "SO03"}
    resumed = h.mapsync("seed", "sheet.yaml", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _lines(dst, "web_order_lines", "order_ref, line, sku, qty") == _lines(
        src, "order_lines", "order_no, line_no, item_no, qty"
    )
