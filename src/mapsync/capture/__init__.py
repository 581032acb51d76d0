"""Change capture: each method yields ordered, bounded batches with the cursor after them.

A method registers its class in `REGISTRY` under the `changes.method` name of the sheet; its
module loads on first use of that name (see base.Registry).
"""

from mapsync.capture.base import REGISTRY as REGISTRY
from mapsync.capture.base import Capture as Capture
from mapsync.capture.base import Context as Context
from mapsync.capture.base import RunInput as RunInput
from mapsync.capture.base import seed_batches as seed_batches
from mapsync.capture.base import to_changes as to_changes
