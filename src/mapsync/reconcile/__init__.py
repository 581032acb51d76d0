"""Data delivery quality (issue 18, docs/reconcile.md): business checks (an aggregate per group on
both sides), drift checks (the destination's rows against the key ledger's drift digests), their
results in the state store, and the repair that re-sends what differs."""
