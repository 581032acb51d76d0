"""The drift digest's one-off backfill (`mapsync reconcile SHEET --sync S --backfill`): ledger
entries delivered before the ledger kept a digest (state schema v8) get one without a write.

The source is read whole, in key order (the plain seed read, without `seed.where`: every row
the ledger may hold), each row is mapped as a run maps it, and an entry that is live, has no
digest and whose ledger hash equals the mapped row's hash — what was delivered is what would be
delivered now — gets the `DriftForm.of` pair of the mapped values. Entries whose hash differs
are left: the source changed since, and their next delivery stores their pair. The sync's lease
is held throughout and renewed by a heartbeat while the source is read (a lost lease stops the
backfill), so no run of the sync moves the ledger meanwhile; and each entry is set only while it
is still undigested at the hash read (`Ledger.set_drift`), so even a run that got in cannot have
its newer pair overwritten with the old one.
"""

from __future__ import annotations

import logging

from mapsync import errors, records, transforms
from mapsync.capture import base as capture_base
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.engine import Engine
from mapsync.lease_watch import heartbeat
from mapsync.state import lease as leases

log = logging.getLogger("mapsync.reconcile")
PAGE = 5000


def backfill(engine: Engine, sync: str, *, batch: int | None = None) -> int:
    """Store the drift pair of the sync's live, undigested ledger entries whose delivered hash
    is what the source maps to now; returns the entries set."""
    store, cfg = engine.store, engine.sheet.syncs[sync]
    parts = engine.parts(sync)
    dest = parts.dest
    form = dest.drift_form if isinstance(dest, SqlDestination) else None
    if form is None:
        raise errors.ConfigError(
            f"sync {sync}: its destination keeps no drift digest (a SQL destination whose key "
            "columns have a digestable type is needed)"
        )
    done = 0
    with (
        leases.held(store, sync, engine.sheet.state.lease_ttl) as lease,
        heartbeat(store, lease, True) as beat,
    ):
        assert beat is not None
        wanted = {
            key
            for page in store.drift_scan(sync, PAGE)
            for key, _, digest, gone in page
            if digest is None and not gone
        }
        if not wanted:
            return 0
        size = batch or cfg.delivery.batch
        for part in capture_base.seed_batches(parts.source, {}, size, None, parts.version_column):
            changes = [c for c in part.changes if records.key_text(c.key) in wanted]
            if not changes:
                continue
            ctx = parts.mapping.prepare(changes)
            tally = transforms.Tally()
            mapped = [
                m for c in changes if isinstance(m := parts.mapping.apply(c, ctx, tally), records.Mapped)
            ]
            ledger = store.ledger(sync, [m.key for m in mapped])
            entries: dict[str, tuple[str, str, str]] = {}
            for m in mapped:
                entry = ledger.get(m.key)
                if m.op != "upsert" or entry is None or entry.deleted or entry.hash != m.hash:
                    continue
                pair = form.of_written(m.values)  # None: a column left out, a value it cannot read
                if pair is not None:
                    entries[records.key_text(m.key)] = (*pair, m.hash)
            beat.check()  # LeaseLost: another process holds the sync now
            done += store.set_drift(sync, entries)
    log.info("drift_backfill", extra={"action": "drift_backfill", "sync": sync, "count": done})
    return done
