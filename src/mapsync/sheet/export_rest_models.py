"""The parts of a transaction export (`changes: {method: export_flag}`) that read from an API whose
order export marks what it returns (CIMcloud's `OnlineOrders`): where the status is written back
(`write_back`), and the lost-order sweep (`sweep`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration


class ExportWriteBack(Model):
    """Where an export from an API writes each transaction's status: a resource of the same
    connection that updates orders by a field (CIMcloud: the standard `orders` resource,
    documented as the place to reset `exported`)."""

    resource: str = Field(
        "orders",
        description=(
            "The resource the status is written to (CIMcloud: an Orders resource of type "
            "`standard`; the name is per site)."
        ),
    )
    key: str | None = Field(
        None,
        description=(
            "The field identifying an order there (CIMcloud: a user key such as `c_ordnum`): the "
            "sync's `key.from` (the ledger, the inbox, the sweep and `mapsync reexport` name orders "
            "by it; another field is refused)."
        ),
    )
    method: Literal["POST", "PUT"] = Field(
        "POST",
        description=(
            "`POST` (documented for the reset of `exported`; an upsert) or `PUT` (update only: an "
            "order that is not there is refused instead of created, where the site allows PUT)."
        ),
    )


class ExportSweep(Model):
    """The lost-order sweep: orders the API marked exported within `window` that mapsync never
    received (in neither the key ledger nor the inbox: a GET whose answer was lost, an order
    exported by another client) are set pending again, or reported."""

    window: Duration = Field(
        dt.timedelta(days=7),
        description="How far back (by `created`, CIMcloud `create_date`) the sweep looks.",
    )
    on_lost: Literal["reset", "alert"] = Field(
        "reset",
        description=(
            "`reset`: the order is set pending at the API (`exported = 0`) and exported by the "
            "same sweep; `alert`: it becomes a record error (and so an alert) for a person to judge."
        ),
    )
    max_calls: int = Field(
        20,
        ge=1,
        le=1000,
        description=(
            "At most this many API calls per sweep (reads of 50 orders and resets of 10); the sweep "
            "says how many it will take before it starts and stops at the cap."
        ),
    )
    created: str = Field(
        "create_date",
        description="The Orders resource's field holding when an order was created (the window's field).",
    )
    every: Duration | None = Field(
        None,
        description=(
            "`mapsync daemon` runs the sweep when the last one is older than this (e.g. `1h`). "
            "Without it, only `mapsync sweep` does; a destructive GET whose answer was lost leaves "
            "a `lost:` marker, and the daemon sweeps before its next run of the sync."
        ),
    )
