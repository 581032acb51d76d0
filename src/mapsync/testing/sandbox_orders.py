"""The sandbox's orders: the destructive `OnlineOrders` GET, order lines (`order_detail`), the
test helper that plants orders without HTTP, and the optional check of order fields.

Documented: OnlineOrders returns orders with `exported = '0'` and sets `exported = '1'`; the
`orders` resource is read and written like every resource (user key `c_ordnum`).

INFERRED (not in CIMcloud's public docs, switchable in `Config`):
- the shape of an OnlineOrders answer: with `online_orders_lines="nested"` each order carries its
  lines under `lines_field` (default `details`), ordered by `line_no` numerically, without the
  lines' own `key`; with `"separate"` it carries none and the lines are read through
  `GET /{site}/order_detail/{searchstring}/{page}` like any resource;
- the resource `order_detail` (user key `line_id`), each line naming its order in `c_ordnum`;
- `order_fields`: when set, a write to `orders` naming another field (besides `key` and
  `c_ordnum`) is refused for that record (e.g. `erp_import_status` may not exist).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mapsync.testing.sandbox_store import PAGE, Store, as_string

ORDERS = "orders"
LINES = "order_detail"


def _line_order(line: dict[str, Any]) -> tuple[int, float, str]:
    text = str(line.get("line_no", ""))
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text


def lines_by_order(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Every stored line without its sandbox `key`, by its order's number (lower case: user keys
    match case-insensitively), each order's lines by `line_no` numerically."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in store.all(LINES):
        line = {k: v for k, v in row.items() if k != "key"}
        grouped.setdefault(str(line.get("c_ordnum", "")).lower(), []).append(line)
    for lines in grouped.values():
        lines.sort(key=_line_order)
    return grouped


def export_page(store: Store, *, nested: bool, lines_field: str) -> list[dict[str, Any]]:
    """The next page (PAGE orders) with `exported` '0' or '' (or none), marked `exported = '1'`
    in the store: the whole record, with `o_key` (the sandbox key) and, when `nested`, the lines."""
    picked = [r for r in store.all(ORDERS) if r.get("exported", "0") in ("0", "")][:PAGE]
    grouped = lines_by_order(store) if nested and picked else {}
    out = []
    for row in picked:
        store.set_fields(int(row["key"]), {"exported": "1"})
        order = {**row, "o_key": row["key"], "exported": row.get("exported", "0") or "0"}
        if nested:
            order[lines_field] = grouped.get(str(row.get("c_ordnum", "")).lower(), [])
        out.append(order)
    return out


def add_order(store: Store, order: dict[str, Any], lines: Iterable[dict[str, Any]] = ()) -> str:
    """Store an order and its lines directly (no HTTP, no budget); its `c_ordnum` back.

    `exported` defaults to "0"; `create_date` and `last_modify_date` are now unless `order` gives
    them (a test can plant an old order). Each line gets the order's `c_ordnum`, a `line_no`
    (its position from 1) unless given, and a `line_id` of `{c_ordnum}-{line_no}` unless given."""
    values = {k: as_string(v) for k, v in order.items() if k != "key"}
    number = values.get("c_ordnum", "")
    if not number:
        raise ValueError("an order needs a c_ordnum")
    store.put(ORDERS, "c_ordnum", {"exported": "0", **values})
    for position, line in enumerate(lines, start=1):
        item = {k: as_string(v) for k, v in line.items() if k != "key"}
        item["c_ordnum"] = number
        item["line_no"] = item.get("line_no") or str(position)
        item["line_id"] = item.get("line_id") or f"{number}-{item['line_no']}"
        store.put(LINES, "line_id", item)
    return number


def orders_view(store: Store, lines_field: str, number: str | None = None) -> list[dict[str, Any]]:
    """Stored orders as the standard GET shows them (with `key`), each with its lines under
    `lines_field`; only the one numbered `number` when given."""
    rows = store.all(ORDERS)
    if number is not None:
        rows = [r for r in rows if str(r.get("c_ordnum", "")).lower() == number.lower()]
    grouped = lines_by_order(store) if rows else {}
    return [{**r, lines_field: grouped.get(str(r.get("c_ordnum", "")).lower(), [])} for r in rows]


def unknown_fields(allowed: frozenset[str] | None, item: dict[str, Any]) -> list[str]:
    """The fields of a written order outside `allowed` (none when `allowed` is None)."""
    if allowed is None:
        return []
    return sorted(k for k in item if k not in allowed and k not in ("key", "c_ordnum"))
