"""Keys that would land on one destination row: rejected before writing, never merged.

Two kinds, both record errors naming both source keys:

- **Duplicate keys in one read.** A source query (or a table without a unique key) that returns
  one key twice in a seed, full or watermark read: every row of that key in the batch is
  rejected (rule `duplicate_key`), since which of them is "the" row is not defined; a key of a
  read batch that the previous batch of the same read held already is rejected the same way.
- **Colliding keys** (rule `key_collision`): keys that differ in Python (case, accents, trailing
  spaces) but that the destination's key collation takes for one key, as the destination itself
  decides (`connectors.sql_keys.KeyProbe`, one query per batch). Within a batch the key already
  owning the row in the ledger, else the first in read order, is written; the others are
  rejected. A key that would land on a stored row written for another source key in an earlier
  run (the ledger names it) is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mapsync import records
from mapsync.ports import Destination
from mapsync.state.ports import Ledger


class ReadKeys:
    """The keys of the previous batch of the current read (a duplicate may straddle batches)."""

    def __init__(self) -> None:
        self.previous: set[records.Key] = set()


def show(key: records.Key) -> str:
    return repr(key[0]) if len(key) == 1 else repr(tuple(key))


def duplicates(
    batch: records.Batch, seen: ReadKeys | None
) -> tuple[list[records.Change], list[records.Rejection]]:
    """The changes of a read batch without keys it holds twice (or the previous batch held)."""
    if seen is None or not batch.read:
        return batch.changes, []
    keys = [c.key for c in batch.changes]
    distinct = set(keys)
    again = seen.previous & distinct
    seen.previous = distinct
    if len(distinct) == len(keys) and not again:
        return batch.changes, []
    count: dict[records.Key, int] = {}
    for key in keys:
        count[key] = count.get(key, 0) + 1
    bad = {k for k, n in count.items() if n > 1} | again
    keep: list[records.Change] = []
    rejected: list[records.Rejection] = []
    done: set[records.Key] = set()
    for change in batch.changes:
        if change.key not in bad:
            keep.append(change)
        elif change.key not in done:
            done.add(change.key)
            n = count[change.key]
            message = (
                f"the source returned key {show(change.key)} {n} times in one read: none of its rows "
                "was written (make the key unique in the source table or query)"
                if n > 1
                else f"the source returned key {show(change.key)} again in one read (its earlier row "
                "was written, this one is not: make the key unique in the source table or query)"
            )
            rejected.append(records.Rejection(change.key, message, None, "duplicate_key", change.version))
    return keep, rejected


def collisions(
    dest: Destination, send: list[records.Mapped], ledger: dict[records.Key, Any], store: Any, sync: str
) -> tuple[list[records.Mapped], list[records.Rejection]]:
    """`send` without records whose destination key collides with another source key's (the
    destination's `key_probe` decides, where it has one), and their rejections."""
    probe = dest.key_probe if dest.capabilities.key_probe else None
    if probe is None or not probe.active or not send:
        return send, []
    first: dict[records.Key, records.Mapped] = {}
    for m in send:
        first.setdefault(m.dest_key, m)
    dkeys = list(first)
    probed = probe.probe(dkeys)
    live = {k for k, e in ledger.items() if not e.deleted}
    where = f"{probe.qualified} ({probe.description})"
    groups: dict[int, list[records.Key]] = {}
    for dk, p in zip(dkeys, probed, strict=True):
        groups.setdefault(p.group, []).append(dk)
    why: dict[records.Key, tuple[records.Key | None, str]] = {}  # dest key → (other source key, reason)
    for members in groups.values():
        if len(members) > 1:
            owner = next((dk for dk in members if first[dk].key in live), members[0])
            for dk in members:
                if dk != owner:
                    why[dk] = (first[owner].key, f"the destination {where} takes both for one key")
    stored = {
        dk: p.stored
        for dk, p in zip(dkeys, probed, strict=True)
        if p.stored is not None and dk not in why and first[dk].key not in live
    }
    owners = _owners(store, sync, list(stored.values())) if stored else {}
    for dk, row_key in stored.items():
        assert row_key is not None
        other = owners.get(records.key_text(row_key))
        if other == first[dk].key:
            continue
        why[dk] = (
            other,
            f"the destination {where} holds row {show(row_key)}"
            + (", written earlier for that key," if other else f", which sync {sync} did not write,")
            + " and takes this key for that row's",
        )
    if not why:
        return send, []
    rejected = []
    for m in send:
        if m.dest_key in why:
            other, reason = why[m.dest_key]
            named = f"key {show(m.key)} collides with " + (
                f"key {show(other)}" if other is not None else "a row of the destination"
            )
            rejected.append(
                records.Rejection(m.key, f"{named}: {reason}; not written", None, "key_collision", m.version)
            )
    return [m for m in send if m.dest_key not in why], rejected


def _owners(store: Ledger, sync: str, row_keys: Sequence[records.Key]) -> dict[str, records.Key]:
    """Source keys in the ledger by the destination id they were written to (one query)."""
    return store.ledger_owners(sync, list({records.key_text(k) for k in row_keys}))
