"""Checks across sections of a sheet that a single model cannot make, and the run order."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import ValidationError

from mapsync.sheet import destructive, export_checks, models, reconcile_checks, rule_checks
from mapsync.sheet.base import ChangesModel
from mapsync.sheet.timeout_models import check_timeouts

Path_ = tuple[str | int, ...]


def cross_check(sheet: models.Sheet) -> list[tuple[Path_, str]]:
    """Checks across sections that a single model cannot make."""
    refs = {
        name: ({"from": sync.from_.connection, "to": sync.to.connection}, list(sync.after))
        for name, sync in sheet.syncs.items()
    }
    found = _check_refs(set(sheet.connections), refs)
    found.extend(check_timeouts(sheet))
    for sync_name, sync in sheet.syncs.items():
        found.extend(_check_sync(sync_name, sync))
        found.extend(_check_rule_connections(sync_name, sync, set(sheet.connections)))
        found.extend(_check_rule_specs(sync_name, sync))
        found.extend(_check_ends(sync_name, sync, sheet.connections))
        found.extend(_check_dest_columns(sync_name, sync, sheet.connections))
    found.extend(destructive.problems(sheet))
    found.extend(export_checks.problems(sheet))
    found.extend(reconcile_checks.problems(sheet))
    return found


def _check_dest_columns(
    sync_name: str, sync: models.SyncConfig, connections: dict[str, Any]
) -> list[tuple[Path_, str]]:
    """`to: columns:` belongs to a REST or CIMcloud end and names its fields; there,
    `truncate: auto` needs a declared `length` (an API has no catalog to read it from)."""
    found: list[tuple[Path_, str]] = []
    base: Path_ = ("syncs", sync_name)
    dst = connections.get(sync.to.connection)
    if dst is None:
        return found
    declared = sync.to.columns
    if dst.kind == "sql":
        if declared:
            found.append(((*base, "to", "columns"), "a SQL destination reads its columns from the catalog"))
        return found
    names = {*sync.key.to, *sync.fields}
    if sync.deletes.policy == "disable" and sync.deletes.field:
        names.add(sync.deletes.field)
    for name in declared:
        if name not in names:
            hint = difflib.get_close_matches(name, sorted(names), n=1)
            also = f" (did you mean `{hint[0]}`?)" if hint else ""
            found.append(((*base, "to", "columns", name), f"is not a destination field of this sync{also}"))
    for name, rule in sync.fields.items():
        if rule.truncate == "auto" and (name not in declared or declared[name].length is None):
            found.append(
                (
                    (*base, "fields", name, "truncate"),
                    f"`auto` needs a length: a {dst.kind} destination has no catalog, so declare "
                    f"`to: columns: {{{name}: {{length: N}}}}` or give a number",
                )
            )
    return found


def _check_ends(
    sync_name: str, sync: models.SyncConfig, connections: dict[str, Any]
) -> list[tuple[Path_, str]]:
    """A SQL end names a `table` (or `query`), a REST or CIMcloud end a `resource`."""
    found: list[tuple[Path_, str]] = []
    base: Path_ = ("syncs", sync_name)
    for role, ref in (("from", sync.from_), ("to", sync.to)):
        conn = connections.get(ref.connection)
        if conn is None:
            continue
        if conn.kind == "sql" and ref.resource is not None:
            found.append(((*base, role, "resource"), f"connection {ref.connection!r} is SQL: give `table`"))
        elif conn.kind != "sql" and ref.resource is None:
            found.append(((*base, role), f"connection {ref.connection!r} is {conn.kind}: give `resource`"))
    src = connections.get(sync.from_.connection)
    if src is not None and src.kind == "sql":
        for child_name, child in sync.children.items():
            if child.from_.nested is not None or child.from_.resource is not None:
                found.append(
                    (
                        (*base, "children", child_name, "from"),
                        "child rows of a SQL source come from a `table`",
                    )
                )
    if src is not None and src.kind != "sql":
        if sync.children and sync.changes.method != "export_flag":
            found.append(
                (
                    (*base, "children"),
                    "child rows of an API source are read by its order export "
                    "(`changes: {method: export_flag}`) only",
                )
            )
        for child_name, child in sync.children.items():
            if src.kind == "rest" and child.from_.resource is not None:
                found.append(
                    (
                        (*base, "children", child_name, "from", "resource"),
                        "child rows are read from a resource by CIMcloud searchstrings: a REST "
                        "source carries them `nested` in the record",
                    )
                )
            if child.from_.nested is None and child.from_.resource is None:
                found.append(
                    (
                        (*base, "children", child_name, "from"),
                        "child rows of an API source are `nested` in the record or read from a `resource`",
                    )
                )
        if sync.seed.where is not None and src.kind == "rest":
            found.append(((*base, "seed", "where"), "is SQL: a REST source has no SQL condition"))
        if sync.filter is not None and src.kind == "rest":
            found.append(((*base, "filter"), "is SQL: a REST source has no SQL condition"))
    dst = connections.get(sync.to.connection)
    if dst is not None and dst.kind != "sql":
        if sync.children:
            found.append(((*base, "children"), "child records need a SQL destination"))
        if dst.kind == "cimcloud" and sync.deletes.policy == "hard":
            found.append(
                ((*base, "deletes", "policy"), "CIMcloud documents no DELETE: use `disable` (status 0)")
            )
    found.extend(_check_async(sync_name, sync, dst))
    return found


def _check_async(sync_name: str, sync: models.SyncConfig, dst: Any) -> list[tuple[Path_, str]]:
    """`async` delivery needs a destination with a queue: CIMcloud, or REST with `jobs`."""
    d = sync.delivery
    base: Path_ = ("syncs", sync_name, "delivery")
    found: list[tuple[Path_, str]] = []
    kind = getattr(dst, "kind", None)
    if kind is None:
        return found
    if d.jobs is not None and kind != "rest":
        found.append(
            ((*base, "jobs"), f"is for REST destinations; connection {sync.to.connection!r} is {kind}")
        )
    for field, mode in (("mode", d.mode), ("seed_mode", d.seed_mode)):
        if mode != "async":
            continue
        if kind == "sql":
            found.append(
                ((*base, field), "async delivery needs a queued destination (REST with `jobs`, CIMcloud)")
            )
        elif kind == "rest" and d.jobs is None:
            found.append(((*base, field), "async delivery to a REST API needs `delivery.jobs` (its job API)"))
    return found


def _check_rule_specs(sync_name: str, sync: models.SyncConfig) -> list[tuple[Path_, str]]:
    """Rules that would fail to compile (a bad pattern, zone, template or python hook)."""
    tables = [(("syncs", sync_name, "fields"), sync.fields)] + [
        (("syncs", sync_name, "children", name, "fields"), child.fields)
        for name, child in sync.children.items()
    ]
    return [
        ((*base, field, key), message)
        for base, fields in tables
        for field, spec in fields.items()
        for key, message in rule_checks.sheet_problems(spec, field)
    ]


def _check_rule_connections(
    sync_name: str, sync: models.SyncConfig, connections: set[str]
) -> list[tuple[Path_, str]]:
    """Connections named by `lookup` and `map_from` exist."""
    found: list[tuple[Path_, str]] = []
    tables = [(("syncs", sync_name), sync.fields)] + [
        (("syncs", sync_name, "children", name), child.fields) for name, child in sync.children.items()
    ]
    for base, fields in tables:
        for field, spec in fields.items():
            for rule, connection in (
                ("lookup", spec.lookup.connection if spec.lookup else None),
                ("map_from", spec.map_from.connection if spec.map_from else None),
            ):
                if connection is not None and connection not in connections:
                    where = (*base, "fields", field, rule, "connection")
                    found.append((where, _unknown("connection", connection, connections)))
    return found


def partial_cross_check(data: Any) -> list[tuple[Path_, str]]:
    """The cross checks of a sheet that did not validate: references read from the raw data,
    the per-sync checks for each sync that validates on its own."""
    if not isinstance(data, dict):
        return []
    connections, syncs = data.get("connections"), data.get("syncs")
    if not isinstance(connections, dict) or not isinstance(syncs, dict):
        return []
    refs: dict[str, tuple[dict[str, str], list[str]]] = {}
    found: list[tuple[Path_, str]] = []
    for name, raw in syncs.items():
        refs[str(name)] = _raw_refs(raw)
        try:
            sync = models.SyncConfig.model_validate(raw)
        except ValidationError:
            continue
        found.extend(_check_sync(str(name), sync))
    return _check_refs({str(c) for c in connections}, refs) + found


def _raw_refs(raw: Any) -> tuple[dict[str, str], list[str]]:
    if not isinstance(raw, dict):
        return {}, []
    ends = {
        role: ref["connection"]
        for role in ("from", "to")
        if isinstance(ref := raw.get(role), dict)
        and isinstance(ref.get("connection"), str)
        and ref["connection"]
    }
    after = raw.get("after", [])
    after = [after] if isinstance(after, str) else after
    return ends, [a for a in after if isinstance(a, str)] if isinstance(after, list) else []


def _check_refs(
    connections: set[str], refs: dict[str, tuple[dict[str, str], list[str]]]
) -> list[tuple[Path_, str]]:
    """Connections named by each sync exist; `after` names known syncs and has no cycle."""
    found: list[tuple[Path_, str]] = []
    for sync_name, (ends, deps) in refs.items():
        base: Path_ = ("syncs", sync_name)
        for role, connection in ends.items():
            if connection not in connections:
                found.append(((*base, role, "connection"), _unknown("connection", connection, connections)))
        for dep in deps:
            if dep not in refs:
                found.append(((*base, "after"), _unknown("sync", dep, set(refs))))
    cycle = _cycle({name: deps for name, (_, deps) in refs.items()})
    if cycle:
        found.append((("syncs", cycle[0], "after"), "cycle: " + " → ".join(cycle)))
    return found


def _check_sync(sync_name: str, sync: models.SyncConfig) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []
    base: Path_ = ("syncs", sync_name)
    key_fields = set(sync.key.to)
    for field in sync.fields:
        if field in key_fields:
            found.append(((*base, "fields", field), "is a key column: it is filled from `key`"))
    for child_name, child in sync.children.items():
        cbase = (*base, "children", child_name)
        if child.from_.connection != sync.from_.connection:
            found.append(((*cbase, "from", "connection"), "must be the parent's source connection"))
        if child.to.connection != sync.to.connection:
            found.append(((*cbase, "to", "connection"), "must be the parent's destination connection"))
        if len(child.parent.from_) != len(sync.key.from_) or len(child.parent.to) != len(sync.key.to):
            found.append(((*cbase, "parent"), "must name as many columns as the parent's key"))
    if sync.deletes.field is not None and sync.deletes.field in key_fields:
        found.append(((*base, "deletes", "field"), "cannot be a key column"))
    found.extend(_check_deletes_explicit(sync_name, sync))
    return found


def _check_deletes_explicit(sync_name: str, sync: models.SyncConfig) -> list[tuple[Path_, str]]:
    """A sync whose capture method can emit deletes says what they do (no silent default); the
    facts are the changes model's (`ChangesModel.can_emit_deletes`, `emits_deletes()`)."""
    changes = sync.changes
    if not changes.can_emit_deletes and sync.deletes.policy != "ignore":
        senders = sorted(_method(c) for c in models.CHANGES_MODELS if c.can_emit_deletes)
        return [
            (
                ("syncs", sync_name, "deletes", "policy"),
                f"`{sync.deletes.policy}` would never apply: `changes: {{method: {sync.changes.method}}}` "
                f"never sends deletes. The methods that do: {', '.join(senders)} (watermark with "
                "`deletes_every` or `run --deletes`). Use one of them, or drop `deletes`",
            )
        ]
    if not changes.can_emit_deletes or "deletes" in sync.model_fields_set or not changes.emits_deletes():
        return []
    return [
        (
            ("syncs", sync_name, "changes"),
            f"`changes: {{method: {sync.changes.method}}}` can emit deletes: say what they do by "
            f"adding to sync {sync_name}, e.g.\n"
            "    deletes: {policy: disable, field: active, value: false}   # or hard, ignore, by_reason",
        )
    ]


def _method(model: type[ChangesModel]) -> str:
    """The `method:` name of a changes model."""
    return str(typing.get_args(model.model_fields["method"].annotation)[0])


def _unknown(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    return f"unknown {what} '{name}'{hint}"


def _cycle(after: dict[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        stack.append(name)
        for dep in after[name]:
            if dep not in after:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return []

    for name in after:
        if name not in state and (found := visit(name)):
            return found
    return []


def run_order(sheet: models.Sheet) -> list[str]:
    """Sync names in sheet order, each after the syncs it names in `after`."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in sheet.syncs[name].after:
            visit(dep)
        done.append(name)

    for name in sheet.syncs:
        visit(name)
    return done
