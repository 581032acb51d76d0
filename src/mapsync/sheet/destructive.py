"""Resources whose GET changes them are refused as sources (issue 9, item 4a).

CIMcloud's `OnlineOrders` marks every order it returns as exported: the next GET no longer
returns it. The generic REST read path is made for reads that change nothing: it reads every
page before the first write, retries a GET whose answer was lost, re-reads by key for
`mapsync retry`. Through it, an order that is read but not delivered (a failed run, a lost
answer, a record error) is never returned again: lost. `validate` refuses it as a source, and
so does every command that loads the sheet, unless the sync reads it with `changes: {method: export_flag}`
(capture/export_inbox.py: each page stored in the inbox before it is parsed, the GET never
repeated). A sheet marks other resources like it with `destructive: true`.
"""

from __future__ import annotations

from typing import Any

from mapsync.sheet import models

Path_ = tuple[str | int, ...]

KNOWN = frozenset({"onlineorders"})  # CIMcloud: GET marks the returned orders exported

_WHY = (
    "the generic REST read path reads every page before the first write, retries GETs and "
    "re-reads by key (`mapsync retry`), so records read but not delivered would be lost for "
    "good. Read it with `changes: {method: export_flag}`, which stores each page in the state "
    "store's inbox before parsing it and never repeats the GET"
)


def known(resource: str) -> bool:
    """`resource` is (a path into) a resource mapsync knows to be destructive."""
    parts = [p.strip().lower() for p in resource.split("?", 1)[0].split("/")]
    return any(p in KNOWN for p in parts)


def problems(sheet: models.Sheet) -> list[tuple[Path_, str]]:
    """Sources that read a destructive resource; CIMcloud read-backs through one."""
    found: list[tuple[Path_, str]] = []
    for sync_name, sync in sheet.syncs.items():
        ref, base = sync.from_, ("syncs", sync_name, "from")
        conn = sheet.connections.get(ref.connection)
        if sync.changes.method == "export_flag" and getattr(conn, "kind", "sql") != "sql":
            continue  # read safely: each page stored in the inbox before it is parsed (export_checks)
        found.extend((base + tail, msg) for tail, msg in _source(ref, conn))
    for name, conn in sheet.connections.items():
        for write, read in getattr(conn, "read_paths", {}).items():
            if known(read):
                found.append(
                    (
                        ("connections", name, "read_paths", write),
                        f"{read} marks every order it returns as exported: reading back through "
                        "it would take orders from whoever exports them (name a resource whose "
                        "GET changes nothing)",
                    )
                )
    return found


def _source(ref: models.SourceRef, conn: Any) -> list[tuple[Path_, str]]:
    kind = getattr(conn, "kind", None)
    if ref.resource is None:
        if ref.destructive is not None:
            return [(("destructive",), "is for a REST or CIMcloud `resource`")]
        return []
    if ref.destructive:
        return [
            (
                ("destructive",),
                f"resource {ref.resource!r} is marked destructive (reading it changes it): {_WHY}",
            )
        ]
    if known(ref.resource) and (kind == "cimcloud" or ref.destructive is None):
        other = (
            " (if this API is not CIMcloud and its resource changes nothing when read, say "
            "`destructive: false`)"
            if kind == "rest"
            else ""
        )
        return [
            (
                ("resource",),
                f"{ref.resource} is CIMcloud's order export: each GET marks the orders it returns "
                f"as exported, and they are not returned again; {_WHY}{other}",
            )
        ]
    return []
