"""The mass-delete guard: refuse a run that would delete too much of the destination.

Two ways in:

- a capture that reads the whole source (snapshot diff, the watermark's key-set check) knows,
  before it emits any delete, how many rows the source returned and how many ledger-live keys
  it did not see; it calls `Guard.check_read`, which refuses a run whose source looks empty or
  partial, or whose deletes exceed `deletes.max_delete_ratio` of the ledger's live keys;
- deletes that arrive incrementally (queue, change log, inbox) are counted per batch by the
  engine (`before_send`, right before the destination write): once this run's deletes would
  cross the ratio the batch is refused, unsent. Only deletes of keys live in the ledger count: a
  delete of a key that was never delivered (or is already deleted) removes nothing.

A refusal stops the run as failed with `failure_class` `guard` and a message with the numbers;
the cursor is kept and nothing of the refused batch is sent. `mapsync run --force-deletes` lets
one run through.
"""

from __future__ import annotations

from collections.abc import Sequence

from mapsync import errors, records
from mapsync.ports import Capture
from mapsync.sheet import models
from mapsync.state import ledger
from mapsync.state.ports import Store


class GuardTripped(errors.PermanentError):
    """The mass-delete guard refused the run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure_class="guard", reason=errors.REASON_GUARD)


class Guard:
    """One run's guard (`force`: --force-deletes, nothing is refused)."""

    def __init__(self, sync: str, store: Store, cfg: models.DeletesConfig, *, force: bool = False) -> None:
        self.sync = sync
        self.store = store
        self.ratio = cfg.max_delete_ratio
        self.policy = cfg.policy
        self.force = force
        self.live: int | None = None  # the ledger's live keys, counted once per run
        self.deleted = 0  # deletes sent in this run

    @property
    def active(self) -> bool:
        """Whether anything can be deleted at all (`ignore` sends no delete)."""
        return not self.force and self.policy != "ignore"

    def live_keys(self) -> int:
        if self.live is None:
            self.live = self.store.live_count(self.sync)
        return self.live

    def _refuse(self, what: str) -> GuardTripped:
        return GuardTripped(
            f"sync {self.sync}: mass-delete guard: {what}; nothing was deleted. Check the source, "
            "then run with --force-deletes if the deletes are real (or raise "
            "`deletes.max_delete_ratio`)"
        )

    def check_read(self, source_rows: int, deletes: int, live: int) -> None:
        """Judge a whole-source read before any of its deletes is sent."""
        self.live = live
        if not self.active or live == 0 or deletes == 0:
            return
        if source_rows == 0:
            raise self._refuse(
                f"the source returned 0 rows while the key ledger holds {live} live row(s) "
                f"(it would delete all {deletes})"
            )
        if source_rows < (1 - self.ratio) * live:
            raise self._refuse(
                f"the source returned {source_rows} row(s), fewer than {1 - self.ratio:.0%} of the "
                f"{live} live row(s) in the key ledger: the read looks partial (it would delete "
                f"{deletes})"
            )
        if deletes > self.ratio * live:
            raise self._refuse(
                f"the run would delete {deletes} of {live} live row(s) ({deletes / live:.1%}), more "
                f"than max_delete_ratio {self.ratio:g}"
            )

    def check_batch(self, deletes: int) -> None:
        """Count a batch's deletes against the ratio before it is sent."""
        if not self.active or deletes == 0:
            return
        live = self.live_keys()
        if self.deleted + deletes > self.ratio * live:
            raise self._refuse(
                f"this run's deletes would reach {self.deleted + deletes} of {live} live row(s) in "
                f"the key ledger, more than max_delete_ratio {self.ratio:g} "
                f"({self.deleted} already sent in earlier batches)"
            )
        self.deleted += deletes

    def live_among(self, keys: Sequence[records.Key]) -> int:
        """How many of `keys` the ledger holds as live at the destination."""
        if not keys:
            return 0
        entries = self.store.ledger(self.sync, keys)
        return sum(1 for e in entries.values() if not e.deleted and e.hash != ledger.DELETED_HASH)


def prepare(
    capture: Capture, store: Store, sync: str, cfg: models.SyncConfig, *, deletes: bool, force: bool
) -> tuple[Guard, bool]:
    """The run's guard, and whether its capture is to run a key-set delete check (`mapsync run
    --deletes`, for a method that checks only on request). ConfigError if the method cannot
    look for deleted rows at all."""
    guard = Guard(sync, store, cfg.deletes, force=force)
    if not deletes:
        return guard, False
    if capture.capabilities.deletes_on_request:
        return guard, True
    if not capture.capabilities.emits_deletes or not cfg.changes.emits_deletes():
        raise errors.ConfigError(
            f"sync {sync}: --deletes: `changes: {{method: {cfg.changes.method}}}` cannot look for "
            "deleted rows (use `watermark` or `snapshot`)"
        )
    return guard, False


def before_send(
    guard: Guard | None, changes: Sequence[records.Change], send: Sequence[records.Mapped]
) -> None:
    """The engine's hook, right before a batch is written: count the deletes among `send`
    against the run's guard (None: a run that sends no delete, such as a retry)."""
    if guard is None or not guard.active:
        return
    gone = {c.key for c in changes if c.op == "delete"}
    if gone:
        guard.check_batch(guard.live_among([m.key for m in send if m.key in gone]))
