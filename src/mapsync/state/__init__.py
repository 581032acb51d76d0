"""The state store: cursors, key ledger, runs, record errors, leases, audit."""
