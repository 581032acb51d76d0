"""The call budgets' tables (`mapsync_budgets`, `mapsync_budget_calls`): a mixin of `StateStore`
(port `Budget`). The decision (which limits, which margins, how long to wait) is rest/budget.py's;
the SQL for SQLite and PostgreSQL stores is here. Not `guarded`: a failing store is reported by
the caller as a transient `tool` failure of the call budget, as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync.state import schema
from mapsync.state.clock import stamp
from mapsync.state.data import BudgetRow as BudgetRow
from mapsync.state.data import Recent as Recent


class BudgetMixin:
    engine: sa.Engine
    dialect: str

    def budget_ensure(self, credential: str) -> None:
        """The credential's row exists (another process may make it at the same time)."""
        b = schema.budgets
        dialect: Any = postgresql if self.dialect == "postgresql" else sqlite
        with self.engine.begin() as conn:
            conn.execute(
                dialect.insert(b)
                .values(credential=credential, updated_at=stamp())
                .on_conflict_do_nothing(index_elements=["credential"])
            )

    def budget_take(
        self,
        credential: str,
        now: Callable[[], int],
        decide: Callable[[int, BudgetRow, Recent], int],
        keep_us: int,
    ) -> tuple[int, int]:
        """Decide and record one call in one transaction: `decide(now, row, recent)` returns the
        µs to wait (> 0: nothing recorded); else the call is recorded at `now`, the server's
        remaining count goes down by one, and calls older than `keep_us` are pruned. Returns
        (the wait, 0) or (0, the recorded call's id, for `budget_settle`)."""
        calls, b = schema.budget_calls, schema.budgets
        with self.engine.begin() as conn:
            # writing the credential's row first takes its lock (PostgreSQL) or the database
            # write lock (SQLite), so deciding and recording a call is one step for everyone
            conn.execute(sa.update(b).where(b.c.credential == credential).values(updated_at=stamp()))
            row = conn.execute(
                sa.select(b.c.blocked_until_us, b.c.server_remaining, b.c.server_reset_us).where(
                    b.c.credential == credential
                )
            ).one()
            moment = now()

            def recent(count: int, after: int) -> list[int]:
                return list(
                    conn.execute(
                        sa.select(calls.c.at_us)
                        .where(calls.c.credential == credential, calls.c.at_us > after)
                        .order_by(calls.c.at_us.desc())
                        .limit(count)
                    ).scalars()
                )

            wait = decide(moment, BudgetRow(*row), recent)
            if wait > 0:
                return wait, 0
            made = conn.execute(sa.insert(calls).values(credential=credential, at_us=moment))
            key = made.inserted_primary_key
            assert key is not None  # an insert of one row into a table with an id
            call = int(key[0])
            if row.server_remaining is not None:
                conn.execute(
                    sa.update(b)
                    .where(b.c.credential == credential)
                    .values(server_remaining=b.c.server_remaining - 1)
                )
            conn.execute(
                sa.delete(calls).where(calls.c.credential == credential, calls.c.at_us <= moment - keep_us)
            )
            return 0, call

    def budget_settle(self, credential: str, call: int, now: Callable[[], int]) -> None:
        """The call `call` (an id from `budget_take`) is answered: it is recorded at `now()`
        from here on (never earlier than it was; recorded again if it was pruned meanwhile).
        Under the credential's lock, as `budget_take`, so no decision sees it half-way."""
        calls, b = schema.budget_calls, schema.budgets
        with self.engine.begin() as conn:
            conn.execute(sa.update(b).where(b.c.credential == credential).values(updated_at=stamp()))
            moment = now()
            moved = conn.execute(
                sa.update(calls)
                .where(calls.c.id == call, calls.c.credential == credential)
                .values(at_us=sa.case((calls.c.at_us < moment, moment), else_=calls.c.at_us))
            )
            if moved.rowcount == 0:
                conn.execute(sa.insert(calls).values(credential=credential, at_us=moment))

    def budget_tighten(
        self, credential: str, blocked: int | None, server: tuple[int, int | None] | None
    ) -> None:
        """The server said: no call before `blocked` (kept if a later block is stored already);
        `server` = (remaining calls, reset moment), stored as said."""
        b = schema.budgets
        values: dict[str, Any] = {"updated_at": stamp()}
        if blocked is not None:
            values["blocked_until_us"] = sa.case(
                (b.c.blocked_until_us.is_(None), blocked),
                (b.c.blocked_until_us < blocked, blocked),
                else_=b.c.blocked_until_us,
            )
        if server is not None:
            values["server_remaining"], values["server_reset_us"] = server
        with self.engine.begin() as conn:
            conn.execute(sa.update(b).where(b.c.credential == credential).values(values))

    def budget_read(self, credential: str, after: int) -> tuple[list[int], BudgetRow | None]:
        """The credential's call times after `after` (sorted) and its row, if it has one."""
        calls, b = schema.budget_calls, schema.budgets
        with self.engine.connect() as conn:
            times = sorted(
                conn.execute(
                    sa.select(calls.c.at_us).where(calls.c.credential == credential, calls.c.at_us > after)
                ).scalars()
            )
            row = conn.execute(
                sa.select(b.c.blocked_until_us, b.c.server_remaining, b.c.server_reset_us).where(
                    b.c.credential == credential
                )
            ).first()
        return times, (BudgetRow(*row) if row is not None else None)
