"""The sheet model of snapshot-diff capture (`changes: {method: snapshot}`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mapsync.sheet.base import ChangesModel


class SnapshotChanges(ChangesModel):
    """Each run compares a content hash of every source row (computed by the database where it
    can) with the hash the key ledger remembers, and sends only inserted, changed and deleted
    rows. Sees deletes; costs one keys-and-hash read of the whole source per run."""

    method: Literal["snapshot"] = Field(description="`snapshot`.")
    page: int = Field(
        5000,
        ge=100,
        le=100_000,
        description=(
            "Keys (with their hashes) compared against the key ledger per step. Memory grows "
            "with it, not with the table."
        ),
    )
