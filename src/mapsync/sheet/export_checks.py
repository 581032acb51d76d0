"""Checks of transaction exports (`changes: {method: export_flag}`) that need the whole sheet:
where the flag lives, what a seed may do, and that no other sync writes the export's status columns
(the return leg ERP → portal writes into the same table, and must not reset `exported`)."""

from __future__ import annotations

from mapsync.sheet import models

Path_ = tuple[str | int, ...]


def problems(sheet: models.Sheet) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []
    for name, sync in sheet.syncs.items():
        base: Path_ = ("syncs", name)
        changes = sync.changes
        if not isinstance(changes, models.ExportFlagChanges):
            if sync.seed.export_existing:
                found.append(
                    ((*base, "seed", "export_existing"), "is for `changes: {method: export_flag}` only")
                )
            continue
        src = sheet.connections.get(sync.from_.connection)
        if src is not None and (src.kind != "sql" or sync.from_.table is None):
            found.append(
                (
                    (*base, "changes", "method"),
                    "export_flag writes the flag back: it needs a SQL source `table`",
                )
            )
        dst = sheet.connections.get(sync.to.connection)
        if dst is not None and dst.kind != "sql" and changes.on_exists != "update":
            found.append(
                (
                    (*base, "changes", "on_exists"),
                    f"`{changes.on_exists}` reads the destination's rows by key: it needs a SQL destination",
                )
            )
        if dst is not None and dst.kind != "sql" and changes.document is not None:
            found.append(((*base, "changes", "document"), "is read back from a SQL destination only"))
        written = set(changes.written_columns())
        for other, o in sheet.syncs.items():
            same = o.to.connection == sync.from_.connection and o.to.table == sync.from_.table
            clash = sorted(written & set(o.fields)) if same else []
            if clash:
                found.append(
                    (
                        ("syncs", other, "fields", clash[0]),
                        f"writes {', '.join(clash)} of {sync.from_.table!r}, which export {name} "
                        "writes back: a return leg must leave the flag and status columns to the export",
                    )
                )
    return found
