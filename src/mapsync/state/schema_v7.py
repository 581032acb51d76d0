"""The state store's v7 tables (watching): incidents, the alert outbox, daily rollups, delivery
attempts and observations. `schema.py` re-exports them and migrates to them (`_v7_watching`)."""

from __future__ import annotations

import sqlalchemy as sa

from mapsync.state.schema_meta import metadata

# An incident: one condition a monitor found (monitor + sync + subject = its `key`), open until it
# clears. `open_key` is the key while open and NULL once resolved: unique, so two processes that
# find the same condition at once open one incident (the second refreshes it).
incidents = sa.Table(
    "mapsync_incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(400), nullable=False),
    sa.Column("open_key", sa.String(400), nullable=True, unique=True),
    sa.Column("monitor", sa.String(64), nullable=False),
    sa.Column("sync", sa.String(128), nullable=True),  # NULL: the whole sheet (state store, a channel)
    sa.Column("subject", sa.String(200), nullable=True),  # within the sync: a credential, a channel …
    sa.Column("severity", sa.String(16), nullable=False),  # critical | warning | info
    sa.Column("failure_class", sa.String(16), nullable=False),  # source | destination | tool | …
    sa.Column("message", sa.Text, nullable=False),  # names and counts, redacted
    sa.Column("numbers", sa.Text, nullable=True),  # JSON: the figures behind it
    sa.Column("runbook", sa.Text, nullable=True),  # what to look at, which command to run
    sa.Column("channels", sa.Text, nullable=False, default="[]"),  # JSON: routed to at opening
    sa.Column("status", sa.String(16), nullable=False),  # open | resolved
    sa.Column("opened_at", sa.String(40), nullable=False),
    sa.Column("last_seen_at", sa.String(40), nullable=False),
    sa.Column("resolved_at", sa.String(40), nullable=True),
    sa.Column("reminded_at", sa.String(40), nullable=True),
    sa.Column("acked_by", sa.String(255), nullable=True),
    sa.Column("acked_at", sa.String(40), nullable=True),
    sa.Column("silenced_by", sa.String(255), nullable=True),
    sa.Column("silenced_until", sa.String(40), nullable=True),
    sa.Index("ix_mapsync_incidents_sync_status", "sync", "status"),
    sa.Index("ix_mapsync_incidents_key", "key"),
)

# The alert outbox: one row per incident, channel and notice (`opened`, `reminder`, `resolved`),
# written in the transaction that opened, reminded or resolved the incident; a sender claims due
# rows for a while (`claimed_until`), sends, and marks them sent, or failed with the next try.
notifications = sa.Table(
    "mapsync_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # opened | reminder | resolved
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_at", sa.String(40), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("sent_at", sa.String(40), nullable=True),
    sa.Column("claimed_by", sa.String(255), nullable=True),
    sa.Column("claimed_until", sa.String(40), nullable=True),
    sa.Index("ix_mapsync_notifications_due", "status", "next_at"),
)

# Daily rollups of the runs, kept (much longer) after the runs themselves are purged.
rollups = sa.Table(
    "mapsync_rollups",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    sa.Column("success", sa.Integer, nullable=False, default=0),
    sa.Column("partial", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("late", sa.Integer, nullable=False, default=0),
    sa.Column("read", sa.BigInteger, nullable=False, default=0),
    sa.Column("written", sa.BigInteger, nullable=False, default=0),
    sa.Column("rejected", sa.BigInteger, nullable=False, default=0),
    sa.Column("deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("p95_ms", sa.BigInteger, nullable=True),
    sa.Column("max_ms", sa.BigInteger, nullable=True),
)

# Delivery attempts of a record (`mapsync trace`): the last few per key, the mapped payload kept
# only for a failed attempt (a hash otherwise).
attempts = sa.Table(
    "mapsync_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # delivered | rejected | deleted | failed
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
    sa.Column("dest_id", sa.String(512), nullable=True),
    sa.Column("message", sa.Text, nullable=True),  # the destination's answer, redacted
    sa.Column("payload", sa.Text, nullable=True),  # JSON of the mapped record: failed attempts only
    sa.Index("ix_mapsync_attempts_key", "sync", "key", "id"),
)

# What monitors measured last time, to compare with (a source's newest time or row count going
# backwards, as after a restore).
observations = sa.Table(
    "mapsync_observations",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),  # typed JSON
    sa.Column("observed_at", sa.String(40), nullable=False),
)
