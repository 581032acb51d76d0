"""Which columns a queue's triggers ignore: those an `export_flag` sync of the same connection and
table writes back (the install on real databases: tests/integration/capture/test_triggers_ignore.py)."""

from __future__ import annotations

from pathlib import Path

from mapsync.capture import queue_admin
from mapsync.sheet import loader

SHEET = """
version: 1
connections:
  src: {url: "sqlite:///src.db"}
  other: {url: "sqlite:///other.db"}
syncs:
  mirror:
    from: {connection: src, table: orders}
    to: {connection: other, table: orders}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: queue}
    deletes: {policy: hard}
  lines:
    from: {connection: src, table: lines}
    to: {connection: other, table: lines}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: queue}
    deletes: {policy: hard}
  export:
    from: {connection: src, table: orders}
    to: {connection: other, table: erp_orders}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: export_flag, flag: exported, status: erp_import_status}
  export_again:
    from: {connection: src, table: orders}
    to: {connection: other, table: erp_orders2}
    key: {from: id, to: id}
    fields: {name: name}
    changes:
      method: export_flag
      flag: exported
      error: erp_import_error
      document: {from: number, to: erp_number}
  elsewhere:
    from: {connection: other, table: orders}
    to: {connection: src, table: copy}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: export_flag, flag: sent, status: sent_status}
"""


def test_queue_targets_ignore_the_write_back_of_export_syncs_of_the_same_table(tmp_path: Path) -> None:
    (tmp_path / "sheet.yaml").write_text(SHEET)
    loaded = loader.load(tmp_path / "sheet.yaml")
    (queue,) = queue_admin.queues(loaded, ["mirror", "lines"])  # the export syncs need not be named
    by_table = {t.table: t for t in queue_admin.targets(queue, None)}
    # the union of both exports of src.orders, in order, once each; not other.orders' columns
    assert by_table["orders"].ignore == ("exported", "erp_import_status", "erp_import_error", "erp_number")
    assert by_table["lines"].ignore == ()  # no export reads it
    assert queue_admin.written_back(loaded, "other", "orders") == ("sent", "sent_status")
