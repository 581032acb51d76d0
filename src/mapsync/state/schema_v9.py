"""The state store's v9 (operator dashboard, issue 19): web sessions, the operator audit log,
`keys` and `note` on run requests (retry or re-export of chosen keys), and who resolved a record
error with which note. `schema.py` declares the new columns with their tables, re-exports the new
tables and migrates to them (`v9_web`)."""

from __future__ import annotations

import sqlalchemy as sa

from mapsync.state.schema_meta import add_missing_columns, metadata

# Columns added to existing tables (schema.py declares them with the table): name -> DDL type
RUN_REQUESTS_V9 = {"keys": "TEXT", "note": "TEXT"}  # keys: JSON list of keys as on the command line
RECORD_ERRORS_V9 = {"resolved_by": "VARCHAR(255)", "resolved_note": "TEXT"}

# A web session: only the sha256 hex of its token is stored (state/sessions.py).
web_sessions = sa.Table(
    "mapsync_web_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),
    sa.Column("last_seen", sa.String(40), nullable=False),
    sa.Column("revoked_at", sa.String(40), nullable=True),
    sa.Index("ix_mapsync_web_sessions_user", "user"),
)

# What operators did (web or CLI), append-only; purged with the run history (state/history.py).
audit_log = sa.Table(
    "mapsync_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("sync", sa.String(128), nullable=True),
    sa.Column("detail", sa.Text, nullable=False),  # JSON object
    sa.Index("ix_mapsync_audit_sync", "sync", "id"),
)


def v9_web(conn: sa.Connection) -> None:
    """The new columns (NULL on old rows) and tables (idempotent, for fresh stores)."""
    add_missing_columns(conn, "mapsync_run_requests", RUN_REQUESTS_V9)
    add_missing_columns(conn, "mapsync_record_errors", RECORD_ERRORS_V9)
    for new in (web_sessions, audit_log):
        new.create(conn, checkfirst=True)
