"""Tables of the state store and their migrations (versioned; applied in order)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import sqlalchemy as sa

from mapsync.state.schema_meta import metadata as metadata
from mapsync.state.schema_v7 import attempts as attempts
from mapsync.state.schema_v7 import incidents as incidents
from mapsync.state.schema_v7 import notifications as notifications
from mapsync.state.schema_v7 import observations as observations
from mapsync.state.schema_v7 import rollups as rollups
from mapsync.state.schema_v8 import reconcile_results as reconcile_results
from mapsync.state.schema_v8 import v8_reconcile
from mapsync.state.schema_v9 import audit_log as audit_log
from mapsync.state.schema_v9 import v9_web
from mapsync.state.schema_v9 import web_sessions as web_sessions

SCHEMA_VERSION = 9

meta = sa.Table(
    "mapsync_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

cursors = sa.Table(
    "mapsync_cursors",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

ledger = sa.Table(
    "mapsync_ledger",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("dest_id", sa.String(512), nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    # v8: the drift digest of what was delivered (schema_v8.py, connectors/drift_form.py)
    sa.Column("dkey", sa.String(32), nullable=True),
    sa.Column("digest", sa.String(32), nullable=True),
)

runs = sa.Table(
    "mapsync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # seed | run | overlap | retry
    sa.Column("trigger", sa.String(32), nullable=False),  # cli | schedule | api | demo
    sa.Column("scheduled_at", sa.String(40), nullable=True),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | success | partial | failed
    sa.Column("failure_class", sa.String(16), nullable=True),  # source|destination|tool|config
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=False),
    sa.Column("read", sa.Integer, nullable=False, default=0),
    sa.Column("written", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("rejected", sa.Integer, nullable=False, default=0),
    sa.Column("deleted", sa.Integer, nullable=False, default=0),
    sa.Column("missed", sa.Integer, nullable=False, default=0),
    sa.Column("truncated", sa.Integer, nullable=False, default=0),
    sa.Column("defaulted", sa.Integer, nullable=False, default=0),
    # v5: who ran it, under which sheet, for which schedule slot, how late, for how many slots
    sa.Column("worker", sa.Text, nullable=True),  # host:pid
    sa.Column("sheet_fingerprint", sa.String(64), nullable=True),
    sa.Column("slot", sa.String(16), nullable=True),  # run | retry (NULL: nobody scheduled it)
    sa.Column("lateness_ms", sa.BigInteger, nullable=True),  # started_at - scheduled_at
    sa.Column("coalesced", sa.Integer, nullable=False, default=0, server_default="0"),
    # v7: why a failed run failed, finer than its class (`guard`, `auth`, `budget`, …; monitors.py)
    sa.Column("reason", sa.String(32), nullable=True),
    # v5: each scheduled slot runs once (NULLs never collide: unscheduled runs are not held)
    sa.Index("uq_mapsync_runs_slot", "sync", "slot", "scheduled_at", unique=True),
)

record_errors = sa.Table(
    "mapsync_record_errors",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("field", sa.String(128), nullable=True),
    sa.Column("rule", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.String(40), nullable=False),
    sa.Column("last_seen", sa.String(40), nullable=False),
    sa.Column("resolved_at", sa.String(40), nullable=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("value", sa.Text, nullable=True),  # v2: the unmapped value that rejected it
    sa.Column("dead_at", sa.String(40), nullable=True),  # v5: buried after max attempts
    sa.Column("resolved_by", sa.String(255), nullable=True),  # v9: an operator's resolve …
    sa.Column("resolved_note", sa.Text, nullable=True),  # … and its note (NULL: delivered)
)

# v5: operator controls per sync (pause), read by every process
controls = sa.Table(
    "mapsync_controls",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("paused_by", sa.String(255), nullable=True),
    sa.Column("paused_at", sa.String(40), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)

# v5: runs asked for by an operator, taken by one worker: new -> taken -> done | failed
run_requests = sa.Table(
    "mapsync_run_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # run | overlap | retry | reexport
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("requested_at", sa.String(40), nullable=False),
    sa.Column("taken_at", sa.String(40), nullable=True),
    sa.Column("taken_by", sa.Text, nullable=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # new | taken | done | failed
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("keys", sa.Text, nullable=True),  # v9: JSON list, keys as typed on the CLI
    sa.Column("note", sa.Text, nullable=True),  # v9: the operator's note
    sa.Index("ix_mapsync_run_requests_status", "status", "sync", "id"),
)

# v2: distinct values a translating rule (`map`, `country`, `lookup`, `map_from`) could not place
unmapped = sa.Table(
    "mapsync_unmapped",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("field", sa.String(128), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.String(40), nullable=False),
    sa.Column("last_seen", sa.String(40), nullable=False),
    sa.Column("sample_key", sa.String(512), nullable=True),
    sa.Column("resolved_at", sa.String(40), nullable=True),
)

cursor_audit = sa.Table(
    "mapsync_cursor_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False, index=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("name", sa.String(32), nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
    sa.Column("committed_at", sa.String(40), nullable=False),
)

leases = sa.Table(
    "mapsync_leases",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),
)

# v3: calls made under a call budget (one row per call, per credential hash; pruned)
budget_calls = sa.Table(
    "mapsync_budget_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("credential", sa.String(64), nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),  # epoch microseconds
    sa.Index("ix_mapsync_budget_calls_credential_at", "credential", "at_us"),
)

# v3: one row per credential: the row lock that serialises `acquire`, and what the server said
budgets = sa.Table(
    "mapsync_budgets",
    metadata,
    sa.Column("credential", sa.String(64), primary_key=True),
    sa.Column("blocked_until_us", sa.BigInteger, nullable=True),  # Retry-After, 429
    sa.Column("server_remaining", sa.Integer, nullable=True),  # X-RateLimit-Remaining …
    sa.Column("server_reset_us", sa.BigInteger, nullable=True),  # … until X-RateLimit-Reset
    sa.Column("updated_at", sa.String(40), nullable=False),
)

# v3: the durable webhook inbox (and later destructive reads): appended before acknowledging.
# v4: unique on hashes (a long event id is no longer cut to 255 characters, where two ids with
# one prefix collided) and on the verified signature (a replay under a new event id is caught),
# and the signed time (an older event never overwrites a newer one).
inbox = sa.Table(
    "mapsync_inbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False),
    sa.Column("source", sa.String(128), nullable=True),  # who sent it (webhook, connection)
    sa.Column("event_id", sa.String(255), nullable=False),  # as sent, cut to 255 (for people)
    sa.Column("event_hash", sa.String(64), nullable=False),  # v4: sha256 of the whole id: unique
    sa.Column("signature_hash", sa.String(64), nullable=True),  # v4: sha256 of the HMAC: unique
    sa.Column("signed_at", sa.BigInteger, nullable=True),  # v4: the signed Unix seconds
    sa.Column("received_at", sa.String(40), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.String(16), nullable=False),  # new | processed | stale | error
    sa.Column("processed_at", sa.String(40), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.UniqueConstraint("sync", "event_hash", name="uq_mapsync_inbox_event_hash"),
    sa.UniqueConstraint("sync", "signature_hash", name="uq_mapsync_inbox_signature"),
    sa.Index("ix_mapsync_inbox_sync_status", "sync", "status", "id"),
)

# v3: batches handed to an asynchronous destination: persisted before submitting
async_batches = sa.Table(
    "mapsync_async_batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),  # the client's id, made before submit
    sa.Column("sync", sa.String(128), nullable=False, index=True),
    sa.Column("keys", sa.Text, nullable=False),  # JSON list of the records' keys
    sa.Column("job_id", sa.String(255), nullable=True),  # the server's, as soon as it returns
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("submitted_at", sa.String(40), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | submitted | done | failed
    sa.Column("results", sa.Text, nullable=True),  # JSON per-record results
    sa.Column("updated_at", sa.String(40), nullable=False),
)


# v6: the daemons sharing the store (one row per live process; clocks are the database's) …
workers = sa.Table(
    "mapsync_workers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # host:pid
    sa.Column("token", sa.String(64), nullable=False),  # this incarnation (a new one per register)
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),  # mapsync's
    sa.Column("schema_version", sa.Integer, nullable=False),  # the newest this worker knows
    sa.Column("sheet", sa.Text, nullable=True),  # the sheet's path, for people
    sa.Column("sheet_fingerprint", sa.String(64), nullable=True),
    sa.Column("syncs", sa.Text, nullable=False),  # JSON list: the syncs it may run
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("heartbeat_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),  # heartbeat_at + lease_ttl
)

# … and which of them runs which sync (a claim lives as long as its worker's registration)
claims = sa.Table(
    "mapsync_claims",
    metadata,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),  # the worker's token when it claimed
    sa.Column("claimed_at", sa.String(40), nullable=False),
    sa.Index("ix_mapsync_claims_worker", "worker"),
)


def _v1(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # a new store gets the latest tables; later steps then find them


def _v2(conn: sa.Connection) -> None:
    """The unmapped-values table, and `value` on record errors (idempotent, for fresh stores)."""
    unmapped.create(conn, checkfirst=True)
    columns = {c["name"] for c in sa.inspect(conn).get_columns(record_errors.name)}
    if "value" not in columns:
        q = conn.dialect.identifier_preparer.quote
        conn.execute(sa.text(f"ALTER TABLE {q(record_errors.name)} ADD COLUMN {q('value')} TEXT"))


def _v3(conn: sa.Connection) -> None:
    """Call budget, webhook inbox and async batch tables (idempotent, for fresh stores)."""
    for table in (budget_calls, budgets, inbox, async_batches):
        table.create(conn, checkfirst=True)


def digest(text: str) -> str:
    """The hex SHA-256 of a text's UTF-8 bytes (inbox event ids and signatures)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _v4_inbox_hashes(conn: sa.Connection) -> None:
    """The inbox's `event_hash`, `signature_hash` and `signed_at`, unique on the hashes instead of
    the cut event id. A v3 inbox is migrated in place, its rows kept (their event hash computed
    from the stored id; signature and signing time unknown: NULL). Idempotent, for fresh stores."""
    if "event_hash" in {c["name"] for c in sa.inspect(conn).get_columns(inbox.name)}:
        return
    q = conn.dialect.identifier_preparer.quote
    t = q(inbox.name)
    if conn.dialect.name == "postgresql":
        for ddl in (
            f"ALTER TABLE {t} ADD COLUMN event_hash VARCHAR(64)",
            f"ALTER TABLE {t} ADD COLUMN signature_hash VARCHAR(64)",
            f"ALTER TABLE {t} ADD COLUMN signed_at BIGINT",
            f"UPDATE {t} SET event_hash = encode(sha256(convert_to(event_id, 'UTF8')), 'hex')",  # noqa: S608
            f"ALTER TABLE {t} ALTER COLUMN event_hash SET NOT NULL",
            f"ALTER TABLE {t} DROP CONSTRAINT uq_mapsync_inbox_event",
            f"ALTER TABLE {t} ADD CONSTRAINT uq_mapsync_inbox_event_hash UNIQUE (sync, event_hash)",
            f"ALTER TABLE {t} ADD CONSTRAINT uq_mapsync_inbox_signature UNIQUE (sync, signature_hash)",
        ):
            conn.exec_driver_sql(ddl)
        return
    # SQLite cannot drop a unique constraint: rebuild the table under its name, rows and ids kept
    old = q(inbox.name + "_v3")
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {q('ix_mapsync_inbox_sync_status')}")
    conn.exec_driver_sql(f"ALTER TABLE {t} RENAME TO {old}")
    inbox.create(conn)
    kept = ", ".join(
        q(c.name) for c in inbox.columns if c.name not in ("event_hash", "signature_hash", "signed_at")
    )
    conn.connection.driver_connection.create_function("mapsync_sha256", 1, digest, deterministic=True)  # type: ignore[union-attr]
    conn.exec_driver_sql(
        f"INSERT INTO {t} ({kept}, event_hash) SELECT {kept}, mapsync_sha256(event_id) FROM {old}"  # noqa: S608
    )
    conn.exec_driver_sql(f"DROP TABLE {old}")


def _v5_daemon(conn: sa.Connection) -> None:
    """The daemon's columns on runs (worker, sheet fingerprint, slot, lateness, coalesced) with the
    unique slot index, `dead_at` on record errors, and the controls and run request tables. A v4
    store is migrated in place, its rows kept. Idempotent, for fresh stores."""
    q = conn.dialect.identifier_preparer.quote
    for table, names in ((runs, V5_RUNS), (record_errors, ("dead_at",))):
        have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for name in names:
            if name in have:
                continue
            column = table.c[name]
            ddl = f"ALTER TABLE {q(table.name)} ADD COLUMN {q(name)} {column.type.compile(conn.dialect)}"
            if column.server_default is not None:
                ddl += " NOT NULL DEFAULT 0"
            conn.exec_driver_sql(ddl)
    for index in runs.indexes:
        index.create(conn, checkfirst=True)
    for new in (controls, run_requests):
        new.create(conn, checkfirst=True)


V5_RUNS = ("worker", "sheet_fingerprint", "slot", "lateness_ms", "coalesced")


def _v6_workers(conn: sa.Connection) -> None:
    """The workers and claims tables of several daemons on one store (idempotent)."""
    for new in (workers, claims):
        new.create(conn, checkfirst=True)


def _v7_watching(conn: sa.Connection) -> None:
    """`reason` on runs; incidents, their notifications, rollups, delivery attempts and
    observations (idempotent, for fresh stores)."""
    q = conn.dialect.identifier_preparer.quote
    if "reason" not in {c["name"] for c in sa.inspect(conn).get_columns(runs.name)}:
        conn.exec_driver_sql(f"ALTER TABLE {q(runs.name)} ADD COLUMN {q('reason')} VARCHAR(32)")
    for new in (incidents, notifications, rollups, attempts, observations):
        new.create(conn, checkfirst=True)


# Each entry upgrades the schema from version i to i + 1 (index 0: empty → 1).
MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _v1,
    _v2,
    _v3,
    _v4_inbox_hashes,
    _v5_daemon,
    _v6_workers,
    _v7_watching,
    v8_reconcile,
    v9_web,
]
assert len(MIGRATIONS) == SCHEMA_VERSION
