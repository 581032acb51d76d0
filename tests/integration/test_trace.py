"""`mapsync trace`: one record's journey, over real syncs.

- An order sync with lines, PostgreSQL → PostgreSQL with its state store on PostgreSQL: a seed
  (no delivered attempts: the ledger says it), a changed order (a delivered attempt whose hash is
  the ledger's), a changed line (a new attempt of its order), an order the destination refuses
  (a rejected attempt with the payload kept, shown only with --show-payload), an order the mapping
  refuses (no payload, the value in the message), an unknown key (exit 1). Both refused values
  hold a secret of the sheet: it reaches neither the state store nor the trace's output (canary).
- A trigger-queue sync on PostgreSQL: the queue rows of a key (status, retries), `pending in queue`.
- An inbox sync: the inbox items that carry a key, `in inbox` until a run processes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync.state.store import StateStore
from tests import helpers as h
from tests.queue_world import World

SECRET = "Kanar1e-trace-5ecret"
ENV = {"DST_PW": SECRET}

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
state: {{url: "{state}"}}
syncs:
  orders:
    from: {{connection: erp, table: orders}}
    to: {{connection: portal, table: web_orders}}
    key: {{from: order_no, to: ref}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
    fields:
      customer: customer_no
      qty: {{from: qty_text, cast: int}}
    children:
      lines:
        from: {{connection: erp, table: order_lines}}
        to: {{connection: portal, table: web_order_lines}}
        parent: {{from: order_no, to: order_ref}}
        key: {{from: [order_no, line_no], to: [order_ref, line]}}
        fields:
          sku: item_no
"""


def _trace(folder: Path, *args: str) -> tuple[int, Any, str]:
    done = h.mapsync("trace", "sheet.yaml", "--sync", *args, cwd=folder, env=ENV)
    if "--json" in args and done.returncode == 0:
        return done.returncode, json.loads(done.stdout), done.stderr
    return done.returncode, done.stdout, done.stderr


def _orders(src: str, dst: str, state: str, folder: Path) -> None:
    h.execute(
        src,
        "CREATE TABLE orders (order_no VARCHAR(20) PRIMARY KEY, customer_no VARCHAR(40), "
        "qty_text VARCHAR(40), last_modified TIMESTAMP(6))",
        "CREATE TABLE order_lines (order_no VARCHAR(20), line_no INTEGER, item_no VARCHAR(20), "
        "PRIMARY KEY (order_no, line_no))",
    )
    h.execute(
        dst,
        # the destination refuses customers starting with X: a record-level refusal of the write
        "CREATE TABLE web_orders (ref VARCHAR(20) PRIMARY KEY, customer VARCHAR(40) "
        "CONSTRAINT no_x CHECK (customer NOT LIKE 'X%'), qty INTEGER)",
        "CREATE TABLE web_order_lines (order_ref VARCHAR(20), line INTEGER, sku VARCHAR(20), "
        "PRIMARY KEY (order_ref, line))",
    )
    customers = {3: f"X{SECRET}"}  # refused by the destination
    quantities = {4: f"Y{SECRET}"}  # refused by the mapping: not an integer (the message shows it)
    orders = [
        {
            "o": f"SO{i}",
            "c": customers.get(i, f"C{i}"),
            "q": quantities.get(i, "1"),
            "t": "2026-01-01 10:00:00",
        }
        for i in range(1, 6)
    ]
    h.execute(src, "INSERT INTO orders VALUES (:o, :c, :q, :t)", params=orders)
    lines = [{"o": f"SO{i}", "n": n, "s": f"SKU{i}{n}"} for i in range(1, 6) for n in (1, 2)]
    h.execute(src, "INSERT INTO order_lines VALUES (:o, :n, :s)", params=lines)
    parsed = sa.make_url(dst)  # the destination's password is the sheet's secret (trust: any works)
    dst_url = f"postgresql://{parsed.username}:${{DST_PW}}@{parsed.host}:{parsed.port}/{parsed.database}"
    (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst_url, state=state))


def test_trace_of_orders_and_lines_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path, canary: Callable[..., Any]
) -> None:
    src, dst, state = pg_database(), pg_database(), pg_database()
    _orders(src, dst, state, tmp_path)
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path, env=ENV)
    assert seeded.returncode == 1, seeded.stdout + seeded.stderr  # SO3 refused: partial

    code, seed_trace, _ = _trace(tmp_path, "orders", "SO1", "--json")
    assert code == 0 and seed_trace["status"] == "delivered"
    assert seed_trace["attempts"] == []  # a seed records no delivered attempts
    ledger = seed_trace["ledger"]
    assert ledger["deleted"] is False and ledger["dest_id"] and ledger["updated_at"]
    assert seed_trace["capture"]["method"] == "watermark"
    assert "watermark" in seed_trace["capture"]["cursors"]
    assert seed_trace["children"] == ["lines"] and "parent's payload" in seed_trace["children_note"]

    # the refused order: a rejected attempt, its payload kept but shown only when asked for
    code, refused, _ = _trace(tmp_path, "orders", "SO3", "--json")
    assert code == 0 and refused["status"] == "rejected"
    (attempt,) = refused["attempts"]
    assert attempt["outcome"] == "rejected" and "no_x" in attempt["answer"]
    assert attempt["payload_chars"] > 0 and "payload" not in attempt
    assert refused["error"]["open"] is True and refused["ledger"] is None
    (run,) = refused["capture"]["runs"]
    assert run["kind"] == "seed" and run["id"] == attempt["run_id"] == refused["error"]["run_id"]
    code, shown, _ = _trace(tmp_path, "orders", "SO3", "--json", "--show-payload")
    payload = shown["attempts"][0]["payload"]
    assert payload["values"]["customer"] == "X***"  # the secret in the value is redacted
    assert [line["sku"] for line in payload["children"]["lines"]] == ["SKU31", "SKU32"]

    # refused by the mapping: no payload (nothing was sent), the value in the message redacted
    code, mapped, _ = _trace(tmp_path, "orders", "SO4", "--json", "--show-payload")
    (attempt,) = mapped["attempts"]
    assert attempt["outcome"] == "rejected" and "payload" not in attempt and attempt["hash"] is None
    assert "'Y***'" in attempt["answer"] and "(field qty, cast)" in attempt["answer"]
    assert "'Y***'" in mapped["error"]["message"]

    # SO1 changed; SO2 only in a line (with its header's timestamp): one delivered attempt each
    h.execute(
        src,
        "UPDATE orders SET customer_no = 'C100', last_modified = '2026-01-02 10:00:00' WHERE order_no = 'SO1'",
    )
    h.execute(
        src,
        "UPDATE order_lines SET item_no = 'SKU-NEW' WHERE order_no = 'SO2' AND line_no = 2",
        "UPDATE orders SET last_modified = '2026-01-02 10:00:00' WHERE order_no = 'SO2'",
    )
    # the watermark recorded by the seed is "now": move it back so the edits are newer
    watermark = '{"datetime":"2026-01-01T12:00:00"}'
    h.execute(
        state, "UPDATE mapsync_cursors SET value = :v WHERE name = 'watermark'", params={"v": watermark}
    )
    ran = h.mapsync("run", "sheet.yaml", cwd=tmp_path, env=ENV)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    code, changed, _ = _trace(tmp_path, "orders", "SO1", "--json")
    (delivered,) = changed["attempts"]
    assert delivered["outcome"] == "delivered" and "payload_chars" not in delivered
    assert delivered["hash"] == changed["ledger"]["hash"] != ledger["hash"]
    assert delivered["dest_id"] == changed["ledger"]["dest_id"]
    assert [r["kind"] for r in changed["capture"]["runs"]] == ["run"]
    code, line_changed, _ = _trace(tmp_path, "orders", "order_no=SO2", "--json")
    assert code == 0 and [a["outcome"] for a in line_changed["attempts"]] == ["delivered"]

    code, text, _ = _trace(tmp_path, "orders", "SO3")
    assert code == 0 and "SO3: rejected" in text and "--show-payload" in text and SECRET not in text

    code, _, err = _trace(tmp_path, "orders", "SO99")
    assert code == 1 and "no trace of SO99 in sync orders" in err
    code, _, err = _trace(tmp_path, "nope", "SO1")
    assert code == 2 and "nope" in err

    c = canary(SECRET)
    for args in (("SO3", "--json", "--show-payload"), ("SO3",), ("SO4",), ("SO1", "--json")):
        done = h.mapsync("trace", "sheet.yaml", "--sync", "orders", *args, cwd=tmp_path, env=ENV)
        c.process(f"trace {' '.join(args)}", done)
    c.store(state)
    c.assert_clean()


def test_trace_of_a_queue_key_on_postgresql(pg_database: Callable[[], str], tmp_path: Path) -> None:
    world = World(pg_database(), pg_database(), tmp_path)
    try:
        world.install()
        world.add((1, "a"))
        world.seed()
        world.add((2, "bad"), (3, "c"))
        assert world.engine()["rejected"] == 1
        code, bad, _ = _trace(tmp_path, "items", "2", "--json")
        assert code == 0 and bad["key"] == {"id": 2}
        assert bad["status"] == "pending in queue"  # its row waits for a retry after backoff
        (row,) = bad["queue"]["rows"]
        assert row["status"] == "error" and row["attempts"] >= 1 and row["change"] == "add"
        assert bad["attempts"][0]["outcome"] == "rejected" and "no_bad" in bad["attempts"][0]["answer"]
        code, good, _ = _trace(tmp_path, "items", "id=3", "--json")
        assert good["status"] == "delivered" and good["queue"]["rows"][0]["status"] == "completed"
        assert good["attempts"][0]["outcome"] == "delivered"
        h.execute(world.src, "UPDATE items SET name = 'c2' WHERE id = 3")
        code, waiting, _ = _trace(tmp_path, "items", "3", "--json")
        assert waiting["status"] == "pending in queue"
        assert [r["status"] for r in waiting["queue"]["rows"]] == ["new", "completed"]
        code, _, err = _trace(tmp_path, "items", "44")
        assert code == 1 and "no trace of 44 in sync items" in err
    finally:
        world.close()


INBOX_SHEET = """
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  portal: {url: "sqlite:///portal.db"}
syncs:
  items:
    from: {connection: erp, table: items}
    to: {connection: portal, table: products}
    key: {from: sku, to: sku}
    fields: {nm: descr}
    changes: {method: inbox}
    deletes: {policy: hard}
"""


def test_trace_of_an_inbox_key(tmp_path: Path) -> None:
    h.execute(f"sqlite:///{tmp_path / 'erp.db'}", "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT)")
    h.execute(f"sqlite:///{tmp_path / 'portal.db'}", "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    (tmp_path / "sheet.yaml").write_text(INBOX_SHEET)
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    store = StateStore.open("sqlite:///.mapsync/state.db", tmp_path, create=False)
    try:
        store.inbox.append("items", "e1", json.dumps({"key": {"sku": "S10"}, "data": {"descr": "one"}}))
        store.inbox.append("items", "e2", json.dumps({"key": {"sku": "S1"}, "data": {"descr": "other"}}))
        store.inbox.append("items", "e3", json.dumps({"sku": "S10", "descr": "two"}))
    finally:
        store.close()
    code, waiting, _ = _trace(tmp_path, "items", "S10", "--json")
    assert code == 0 and waiting["status"] == "in inbox"
    assert [(i["event_id"], i["status"]) for i in waiting["inbox"]] == [("e3", "new"), ("e1", "new")]
    assert waiting["ledger"] is None and waiting["attempts"] == []
    assert h.mapsync("run", "sheet.yaml", cwd=tmp_path).returncode == 0
    code, done, _ = _trace(tmp_path, "items", "S10", "--json")
    assert done["status"] == "delivered" and {i["status"] for i in done["inbox"]} == {"processed"}
    assert [a["outcome"] for a in done["attempts"]] == ["delivered"]  # the two events: one write
    assert h.query(f"sqlite:///{tmp_path / 'portal.db'}", "SELECT nm FROM products WHERE sku = 'S10'") == [
        ("two",)
    ]
