"""The Capture contract: every capture method (full, watermark, snapshot, queue on triggers, inbox
with its items appended to the state store as `mapsync serve` does, on SQLite; the change log on
PostgreSQL through logical decoding and on MariaDB through the binlog) and MemoryCapture pass the
same cases through `ports.Capture`:

- the seed batches cover every row exactly once, in bounded batches;
- after a change, `read` yields it;
- `acknowledge` after a partial rejection (one change rejected, the others delivered) leaves the
  rejected one to be read again or recorded as a record error, as the method documents
  (`capture_world.EXPECT`), and the others done;
- cursors are committed only from `finish`: a capture that read and crashed before `finish`
  changed nothing a fresh capture depends on, so the change is read again, never lost.

- deletes are read where the method declares them (`capabilities.emits_deletes`), none made up
  where it does not.

Runs go through the Engine (capture_world.py); the assertions are on what a fresh capture
reads. The change log's own scenarios (key changes, children, the seed's race, SIGKILL) stay in
tests/integration/capture/test_pg_logical.py and test_binlog.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import records
from mapsync.ports import Capabilities, Capture
from tests.contract.capture_world import (
    BATCH,
    EXPECT,
    SERVICE,
    MemoryWorld,
    SqlWorld,
    World,
    changes_of,
    keys_of,
)

LOG = [
    pytest.param("pg_logical", marks=[pytest.mark.postgres, pytest.mark.changelog]),
    pytest.param("binlog", marks=[pytest.mark.mariadb, pytest.mark.changelog]),
]


@pytest.fixture(
    params=["memory", "full", "watermark", "watermark_deletes", "snapshot", "queue", "inbox", *LOG]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Every capture method, and MemoryCapture (a new one: one param). The change log reads the
    test module's PostgreSQL or MariaDB database (skipped with the reason where the server is
    not reachable or not set up for it, unless MAPSYNC_REQUIRE_SERVICES names it)."""
    made: World
    if request.param == "memory":
        made = MemoryWorld(tmp_path)
    elif request.param in SERVICE:
        fixture = {"postgres": "pg_module_url", "mariadb": "mariadb_module_url"}[SERVICE[request.param]]
        made = SqlWorld(request.param, tmp_path, request.getfixturevalue(fixture))
    else:
        made = SqlWorld(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def read(world: World, mode: str = "run", cap: Capture | None = None) -> list[records.Batch]:
    """What a fresh capture (or `cap`) reads from the committed cursors (nothing acknowledged or
    finished). The change log reads on from the position the engine committed after each batch:
    with nothing committed, it reads the same batch again, so its first pass is what it read."""
    out: list[records.Batch] = []
    seen: list[Any] = []
    for batch in (cap or world.capture()).read(mode, world.cursors()):
        if world.method == "log" and batch.position is not None:
            if batch.position in seen:
                break
            seen.append(batch.position)
        out.append(batch)
    return out


def test_capabilities_are_declared_as_data(world: World) -> None:
    cap = world.capture()
    assert isinstance(type(cap).capabilities, Capabilities)
    assert cap.capabilities.destructive_read is False  # none of these removes what it reads


def test_seed_batches_cover_every_row_once(world: World) -> None:
    world.put(*((i, f"n{i}") for i in (7, 3, 11, 1, 5, 9, 2, 10, 4, 6, 8)))
    cap = world.capture()
    batches = list(cap.seed_batches(world.source(), cap.start_seed(), BATCH, None, world.version_column))
    assert all(0 < len(b.changes) <= BATCH for b in batches)
    assert sorted(keys_of(batches)) == list(range(1, 12)) and len(keys_of(batches)) == 11
    assert {c.data["name"] for c in changes_of(batches)} == {f"n{i}" for i in range(1, 12)}
    assert all(c.op == "upsert" for c in changes_of(batches))
    # a seed that died after its second batch committed resumes after it: the rest, each once
    resumed = {**cap.start_seed(), **batches[1].position}
    rest = list(world.capture().seed_batches(world.source(), resumed, BATCH, None, world.version_column))
    assert sorted(keys_of(batches[:2]) + keys_of(rest)) == list(range(1, 12))


def test_a_change_is_read(world: World) -> None:
    world.put(*((i, f"n{i}") for i in range(1, 7)))
    assert world.run("seed").ok
    world.put((3, "changed"))
    changes = {int(c.key[0]): c for c in changes_of(read(world))}
    assert 3 in changes and changes[3].op == "upsert" and changes[3].data["name"] == "changed"
    world.put((9, "new"))
    assert 9 in keys_of(read(world))


def test_acknowledge_after_a_partial_rejection(world: World) -> None:
    world.put(*((i, f"n{i}") for i in range(1, 7)))
    assert world.run("seed").ok
    world.put((2, None), (4, "fine"))  # 2 is refused (no name), 4 delivered, in one batch
    report = world.run()
    assert {r.key for r in report.samples} == {(2,)} and report.counts.written >= 1, report
    assert world.delivered()[4] == "fine" and world.delivered()[2] == "n2"
    if (acked := world.acknowledged()) is not None:  # the capture was told which one failed
        _, result = acked[-1]
        assert [r.key for r in result.rejected] == [(2,)]
    expect = EXPECT[world.name]
    again = keys_of(read(world))
    assert (2 in again) is expect.rejected_read_again
    if not expect.rejected_read_again:  # recorded instead, for `mapsync retry`
        assert world.store.open_error_keys("things") == [(2,)]
    if expect.delivered_read_again is not None:
        assert (4 in again) is expect.delivered_read_again
    # once the source fixes it, it is delivered and done
    world.put((2, "fixed"))
    assert world.run().ok and world.delivered()[2] == "fixed"
    if expect.delivered_read_again is False:
        assert keys_of(read(world)) == []


def test_cursors_are_committed_only_at_finish(world: World) -> None:
    world.put(*((i, f"n{i}") for i in range(1, 7)))
    assert world.run("seed").ok
    committed = world.cursors()
    world.put((5, "changed"))
    first = world.capture()
    assert 5 in keys_of(read(world, cap=first))  # read, then the process dies
    assert world.cursors() == committed  # reading committed nothing
    if world.method == "queue":  # its claim is the cursor: taken again once older than `lease`
        time.sleep(0.35)
    again = world.capture()
    batches = read(world, cap=again)
    assert 5 in keys_of(batches)  # re-sent, not lost
    # a finished run commits its cursors (the engine does it with the state); a later change is
    # still read after them
    assert world.run().ok and world.delivered()[5] == "changed"
    world.put((6, "later"))
    assert 6 in keys_of(read(world))


def test_deletes_are_read_where_declared(world: World) -> None:
    world.put(*((i, f"n{i}") for i in range(1, 7)))
    assert world.run("seed").ok
    world.remove(3)
    deletes = [c for c in changes_of(read(world)) if c.op == "delete"]
    if world.emits_deletes():
        # at least once (a queue or inbox reads each older event of the key as its current state)
        assert {int(c.key[0]) for c in deletes} == {3}
    else:  # declared False: none is made up
        assert deletes == []
