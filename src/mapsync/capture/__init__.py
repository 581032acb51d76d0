"""Change capture: each method yields ordered, bounded batches with the cursor after them.

A method registers its class in `REGISTRY` under the `changes.method` name of the sheet.
"""

from mapsync.capture import (  # noqa: F401  (registration: each method module registers itself)
    full,
    inbox,
    log,
    queue,
    snapshot,
    watermark,
)
from mapsync.capture.base import REGISTRY, Capture, Context, register, seed_batches, to_changes

__all__ = ["REGISTRY", "Capture", "Context", "register", "seed_batches", "to_changes"]
