"""watch_sources' observations (in-process, the MemoryStore): a dry run (`mapsync monitor
--dry-run`) compares with what was observed before without writing what it measured."""

from __future__ import annotations

from mapsync import watch_sources as ws
from mapsync.state.memory import MemoryStore


def test_a_dry_run_compares_without_writing_observations() -> None:
    store = MemoryStore()
    assert ws._observe(store, "s", {"source_rows": 100}) == {}  # the first look: a reference kept
    seen = store.observations.observations("s")
    assert seen[("s", "source_rows")][0] == 100 and seen[("s", "source_rows_ref")][0] == 100
    extra = ws._observe(store, "s", {"source_rows": 50}, write=False)
    assert extra["source_rows_ref"] == 100  # compared with the reference …
    after = store.observations.observations("s")
    assert after[("s", "source_rows")][0] == 100 and after == seen  # … and nothing written
    ws._observe(store, "s", {"source_rows": 50})
    assert store.observations.observations("s")[("s", "source_rows")][0] == 50
