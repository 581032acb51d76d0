"""The circuit breaker of a run's destination (`delivery.breaker`).

An API that answers 4xx to everything must not burn the call budget by isolating records one by
one. After each batch's write the engine tells the breaker how many records it sent and how many
of them the destination refused (`record`):

- a batch with at least `refused` (default 90 %) of its sent records refused is a *refused batch*;
  a batch that sent nothing changes nothing; any other batch closes the breaker again;
- while the last batch was a refused one the breaker is *open*: the next batch's write is made
  inside `delivery.whole()`, so a refused call is not bisected, every record of it is rejected
  with the call's error (one call per write call instead of about 2·n);
- `batches` (default 3) refused batches in a row *trip* it: `record` raises a PermanentError of
  class `destination` before that batch is acknowledged or committed, so the run fails with the
  cursor at the last committed batch and the tripping batch is read again by the next run.

The first refused batch is isolated in full (its record errors are true per-record findings);
the ones after it cost one call per destination write call each.
"""

from __future__ import annotations

import contextlib
import dataclasses

from mapsync import delivery, errors
from mapsync.sheet.delivery_models import BreakerConfig


@dataclasses.dataclass
class Breaker:
    """One run's breaker (`config` None: off, never opens or trips)."""

    config: BreakerConfig | None
    streak: int = 0  # refused batches in a row
    sent: int = 0  # records sent in the streak's batches
    refused: int = 0  # of them, refused by the destination

    @property
    def open(self) -> bool:
        """The last batch was a refused one: the next write is not split."""
        return self.config is not None and self.streak > 0

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """The context of one batch's write: no splitting while the breaker is open."""
        return delivery.whole(self.open)

    def record(self, sync: str, sent: int, refused: int) -> None:
        """A batch's write: `sent` records went out, the destination refused `refused` of them.
        Raises PermanentError (class `destination`) when this batch trips the breaker."""
        cfg = self.config
        if cfg is None or sent == 0:
            return
        if refused < cfg.refused * sent:
            self.streak = self.sent = self.refused = 0
            return
        self.streak += 1
        self.sent += sent
        self.refused += refused
        if self.streak >= cfg.batches:
            share = 100 * self.refused / self.sent
            raise errors.PermanentError(
                f"sync {sync}: destination refused {share:.0f} % of {self.sent} records in "
                f"{self.streak} batches in a row: stopped (delivery.breaker)",
                failure_class=errors.FailureClass.DESTINATION,
                reason=errors.REASON_BREAKER,
            )
