"""Monitors: pure functions over what the state store (and, for a few, the source) says of a sync,
each answering one question of the operator ("did it start on time?", "does the count add up?").

A monitor is registered with `base.monitor(...)` in one of this package's modules and gets the
facts of one sync (`facts.SyncFacts`) or of the whole sheet (`facts.SheetFacts`); it returns the
findings (an empty list: all well, its open incidents clear) or None (it cannot tell: a fact it
needs is unknown, so its incidents stay as they are). Gathering the facts and turning findings into
incidents is `mapsync.watch`'s job; nothing here reads a database or the clock."""

from __future__ import annotations

# the modules that register monitors (each `@monitor(...)` registers at import)
from mapsync.monitors import environment as environment
from mapsync.monitors import events as events
from mapsync.monitors import export as export
from mapsync.monitors import reconcile as reconcile
from mapsync.monitors import signals as signals
from mapsync.monitors import silent as silent
from mapsync.monitors import timing as timing
from mapsync.monitors.base import REGISTRY, Spec, evaluate_sheet, evaluate_sync

__all__ = ["REGISTRY", "Spec", "evaluate_sheet", "evaluate_sync"]
