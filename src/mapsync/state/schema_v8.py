"""The state store's v8 (reconciliation, issue 18): the key ledger's drift digest columns and the
results of reconciliation checks. `schema.py` re-exports the table and migrates to it
(`_v8_reconcile`)."""

from __future__ import annotations

import sqlalchemy as sa

from mapsync.state.schema_meta import add_missing_columns, metadata

# `mapsync_ledger` gains (schema.py declares them with the table):
#   dkey    md5 hex of the drift text form of the destination key (connectors/drift_form.py)
#   digest  md5 hex of the drift text form of the owned destination columns, as delivered
LEDGER_DRIFT = ("dkey", "digest")

# One row per check run: what it compared and found (`detail`: reconcile.results.CheckResult's
# JSON, lists capped), kept for the trend (`mapsync reconcile --history`, the dashboard) and purged
# with the run history (state.retention: `reconcile`).
reconcile_results = sa.Table(
    "mapsync_reconcile_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("check", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # business | drift
    sa.Column("sync", sa.String(128), nullable=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # ok | differs | error | repaired
    sa.Column("compared", sa.Integer, nullable=False, default=0),
    sa.Column("differences", sa.Integer, nullable=False, default=0),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_mapsync_reconcile_results_check", "check", "id"),
)


def v8_reconcile(conn: sa.Connection) -> None:
    """The ledger's `dkey` and `digest` (NULL for entries delivered before: they get theirs on
    their next delivery or by `mapsync reconcile --backfill`) and the results table (idempotent)."""
    add_missing_columns(conn, "mapsync_ledger", dict.fromkeys(LEDGER_DRIFT, "VARCHAR(32)"))
    reconcile_results.create(conn, checkfirst=True)
