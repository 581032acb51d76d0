"""The key walk: compare every source key (and, for snapshot diff, a content hash of its row)
with the key ledger, in bounded pages. One implementation for snapshot diff and for the
watermark's periodic delete check.

Why not a merge join: the ledger stores keys as `records.key_text` (JSON text), whose order is
neither the source's numeric order nor its collation (a MariaDB `_ci` column sorts `abc` and
`ABD` differently from Python). Instead of forcing both sides into one order:

1. the source is streamed (keys and row hash only) and each page of keys is compared with the
   ledger by its exact text inside the state store (one statement per page, `StateStore.compare_page`
   in state/ledger.py, which returns only the keys to send): missing, deleted or different-hash keys are the
   inserts and updates. The walk counts the source rows and the pages' keys that the ledger
   holds live;
2. deleted keys = ledger-live keys that are not in the source. Their number is known after step
   1 without reading anything else (live count at the start − live keys seen), so the guard can
   judge the run before any delete is sent, and a run without deletes skips step 2. Otherwise
   the ledger's live keys are scanned twice (`StateStore.live_scan`: to count them per bucket, then to
   pick the suspects); only those in buckets (a hash of
   the key text) where the ledger holds more live keys than step 1 met are looked up in the
   source. Keys the source does not return *exactly* (compared as key text, so a `_ci`
   collation matching `ABC` for `abc` does not hide the delete) are deleted.

Memory stays flat: one page of keys (and one delivery batch of rows) at a time, and two fixed
arrays of bucket counters.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Iterator

from mapsync import records
from mapsync.capture.keysource import Compiled, existing, stream_keys, typed_key
from mapsync.connectors.sql_source import SqlSource
from mapsync.state import values
from mapsync.state.ports import Store

# --------------------------------------------------------------------------- the walk


@dataclasses.dataclass
class Tally:
    """What the source side of a walk found; `seen` counts the live keys met per bucket."""

    source_rows: int = 0
    live_seen: int = 0  # source keys that the ledger holds live
    live_at_start: int = 0
    seen: array.array[int] = dataclasses.field(default_factory=lambda: _buckets())

    @property
    def deletes(self) -> int:
        return max(0, self.live_at_start - self.live_seen)


BUCKETS = 1 << 18  # 1 MB of counters per side; about 4 keys per bucket at a million rows


def _buckets() -> array.array[int]:
    return array.array("I", bytes(4 * BUCKETS))


def bucket(text: str) -> int:
    """A key text's bucket. Python's string hash differs between processes, never within one:
    both counts of a walk are made in the same process, so it is enough (and cheaper than a
    CRC of the encoded text)."""
    return hash(text) & (BUCKETS - 1)


def changed_keys(
    store: Store, sync: str, source: SqlSource, page: int, tally: Tally, *, hashed: bool
) -> Iterator[list[tuple[records.Key, str | None]]]:
    """Per source page: the keys to send (not in the ledger, deleted there, or — when `hashed` —
    with another row hash) with their hashes. Counts into `tally` as it goes: every source key
    into its bucket, then the keys the ledger does not hold live out again."""
    seen, mask = tally.seen, BUCKETS - 1
    for chunk in stream_keys(source, page, hashed=hashed):
        texts = chunk.texts()
        for text in texts:  # per row: kept lean
            seen[hash(text) & mask] += 1  # = bucket(text)
        tally.source_rows += len(chunk)
        tally.live_seen += len(chunk)
        send = []
        for i, live in store.compare_page(sync, texts, chunk.hashes, hashed=hashed):
            if not live:
                tally.live_seen -= 1
                seen[hash(texts[i]) & mask] -= 1
            send.append((chunk.key(i), chunk.hashes[i]))
        yield send


def deleted_keys(
    store: Store,
    sync: str,
    source: SqlSource,
    page: int,
    seen: array.array[int],
) -> Iterator[list[records.Change]]:
    """Delete changes for the ledger's live keys that the source no longer has, per page. A
    delete carries the key columns as its data (the ledger keeps no row images) and the
    ledger's version (the last row hash).

    Only keys of *suspect* buckets are looked up in the source: a first pass over the ledger
    counts its live keys per bucket; where that equals `seen` (the live keys the source walk
    met there, a subset of them) nothing in the bucket was deleted."""
    live, mask = _buckets(), BUCKETS - 1
    for chunk in store.live_scan(sync, page, versions=False):
        for (text,) in chunk:
            live[hash(text) & mask] += 1  # = bucket(text), inlined: a million times
    suspect = bytes(a != b for a, b in zip(live, seen, strict=True))
    del live
    statements: dict[int, Compiled] = {}
    for chunk in store.live_scan(sync, page, versions=True):
        chunk = [(text, version) for text, version in chunk if suspect[hash(text) & mask]]
        keys = [typed_key(source, text) for text, _ in chunk]
        present = existing(source, keys, statements)
        out = []
        for (text, version), key in zip(chunk, keys, strict=True):
            if text in present:
                continue
            out.append(
                records.Change(
                    "delete",
                    key,
                    values.decode(version),
                    dict(zip(source.key, key, strict=True)),
                )
            )
        if out:
            yield out
