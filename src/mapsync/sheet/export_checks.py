"""Checks of transaction exports (`changes: {method: export_flag}`) that need the whole sheet:
where the flag lives, what a seed may do, and that no other sync writes the export's status columns
(the return leg ERP → portal writes into the same table, and must not reset `exported`)."""

from __future__ import annotations

from mapsync.sheet import destructive, models

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
        if src is not None and src.kind != "sql":
            found.extend(_from_api(base, sync, changes))
            if changes.sweep is not None and src.kind != "cimcloud":
                found.append(
                    (
                        (*base, "changes", "sweep"),
                        "reads CIMcloud's Orders resource by searchstring: a generic REST API documents "
                        "no such search",
                    )
                )
        elif src is not None and sync.from_.table is None:
            found.append(
                (
                    (*base, "changes", "method"),
                    "export_flag writes the flag back: it needs a SQL source `table` (or an API's "
                    "order export, e.g. CIMcloud `OnlineOrders`)",
                )
            )
        else:
            for field in ("write_back", "sweep"):
                if getattr(changes, field) is not None:
                    found.append(((*base, "changes", field), "is for an export from an API (CIMcloud)"))
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


# fields of an export from a SQL table that mean nothing when the API's own GET picks the orders
_SQL_ONLY = {
    "since": "the API's order export returns what it has not exported yet: there is no starting point",
    "created": "the pickup monitor reads a SQL table",
    "version": "an order's version is the hash of the record the API returned",
    "touch": "the write-back is an API call, not an UPDATE",
}


def _from_api(
    base: Path_, sync: models.SyncConfig, changes: models.ExportFlagChanges
) -> list[tuple[Path_, str]]:
    """An export from an API reads a destructive order export (CIMcloud `OnlineOrders`)."""
    found: list[tuple[Path_, str]] = []
    ref = sync.from_
    if ref.resource is None or not (
        ref.destructive or (ref.destructive is None and destructive.known(ref.resource))
    ):
        found.append(
            (
                (*base, "from", "resource"),
                "an export from an API reads its order export, whose GET marks what it returns "
                "(CIMcloud `OnlineOrders`, or a resource marked `destructive: true`)",
            )
        )
    wb = changes.write_back
    if wb is not None and wb.key is not None and [wb.key] != list(sync.key.from_):
        found.append(
            (
                (*base, "changes", "write_back", "key"),
                f"must be the sync's key ({', '.join(sync.key.from_)}): the ledger, the inbox, the sweep "
                "and `mapsync reexport` name orders by it",
            )
        )
    for field, why in _SQL_ONLY.items():
        if getattr(changes, field):
            found.append(((*base, "changes", field), f"is for an export from a SQL table: {why}"))
    if changes.on_failure == "hold":
        found.append(
            (
                (*base, "changes", "on_failure"),
                "`hold` writes a flag value of its own, and the API documents two (`exported` 0 and 1): "
                "use `retry`",
            )
        )
    if sync.seed.where is not None or sync.seed.export_existing:
        field = "where" if sync.seed.where is not None else "export_existing"
        found.append(
            (
                (*base, "seed", field),
                "a seed of an export from an API reads nothing (a GET would mark the orders exported): "
                "the first run exports every order the API has not exported yet",
            )
        )
    if sync.filter is not None:
        found.append(((*base, "filter"), "the API's order export takes no condition: it returns every order"))
    return found
