"""The destination breaker: refused batches in a row (≥ `refused` of the sent records), open
after the first, tripped after `batches` with a PermanentError of class `destination`; a good
batch closes it, an empty one changes nothing, `breaker: false` never trips. Through the engine
(in-memory parts): a destination that refuses everything costs a bounded number of calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync import delivery, errors
from mapsync.breaker import Breaker
from mapsync.sheet.delivery_models import BreakerConfig, DeliveryConfig
from mapsync.testing import fakes


def test_three_refused_batches_in_a_row_trip_it() -> None:
    b = Breaker(BreakerConfig())
    assert not b.open and delivery.splitting()
    b.record("s", 10, 10)
    assert b.open
    with b.writing():
        assert not delivery.splitting()  # open: the next write is not split
    b.record("s", 10, 9)  # 90 %: refused too
    with pytest.raises(errors.PermanentError) as caught:
        b.record("s", 10, 10)
    assert caught.value.failure_class == "destination"
    assert str(caught.value) == (
        "sync s: destination refused 97 % of 30 records in 3 batches in a row: stopped (delivery.breaker)"
    )


def test_a_good_batch_closes_it_and_an_empty_one_changes_nothing() -> None:
    b = Breaker(BreakerConfig(refused=0.5, batches=2))
    b.record("s", 10, 10)
    b.record("s", 0, 0)  # nothing sent: still open
    assert b.open
    b.record("s", 10, 4)  # 40 % < 50 %: closed, the streak starts again
    assert not b.open and b.streak == 0
    with b.writing():
        assert delivery.splitting()
    b.record("s", 4, 2)
    with pytest.raises(errors.PermanentError):
        b.record("s", 4, 4)


def test_breaker_false_never_opens() -> None:
    assert DeliveryConfig.model_validate({"breaker": False}).breaker is None
    assert DeliveryConfig.model_validate({"breaker": True}).breaker == BreakerConfig()
    b = Breaker(DeliveryConfig.model_validate({"breaker": False}).breaker)
    for _ in range(10):
        b.record("s", 10, 10)
    assert not b.open


@pytest.mark.parametrize("breaker", [True, False])
def test_a_destination_refusing_everything_costs_a_bounded_number_of_calls(
    tmp_path: Path, breaker: bool
) -> None:
    loaded = fakes.sheet(
        {
            "c": {
                "key": {"from": "id", "to": "ref"},
                "fields": {"nm": "name"},
                "delivery": {"batch": 8, "breaker": breaker},
            }
        },
        tmp_path,
    )
    source = fakes.MemorySource([{"id": i, "name": f"n{i}", "version": i} for i in range(1, 41)])
    dest = fakes.MemoryDestination()
    dest.poison(*range(1, 41))
    store = fakes.state_store(tmp_path)
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    try:
        report = engine.run("c", "seed")
        if breaker:
            # batch 1 bisected in full (2·8 − 1 calls), batch 2 one call, batch 3 one call: tripped
            assert len(dest.calls) == 15 + 1 + 1
            assert (report.status, report.failure_class) == ("failed", "destination")
            assert "in 3 batches in a row: stopped (delivery.breaker)" in (report.message or "")
            assert store.cursors("c")["seed"]["after"] is not None  # kept at batch 2
            assert len(store.open_error_keys("c")) == 16  # batches 1 and 2; batch 3 not committed
        else:
            assert len(dest.calls) == 5 * 15  # every batch bisected to single records
            assert report.status == "partial" and report.counts.rejected == 40
        dest.heal()
        if breaker:
            assert engine.run("c", "seed").counts.written == 24  # the seed goes on from batch 3
            assert engine.retry("c").counts.written == 16  # the record errors of batches 1 and 2
        else:
            assert engine.retry("c").counts.written == 40
        assert len(dest.rows) == 40
    finally:
        engine.close()
        store.close()


def test_the_next_run_meets_the_breaker_open_and_pays_one_call(tmp_path: Path) -> None:
    """The breaker lives across the runs of one Engine (a daemon's worker): a run after a trip
    does not bisect its first refused batch again."""
    loaded = fakes.sheet(
        {"c": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}, "delivery": {"batch": 8}}},
        tmp_path,
    )
    source = fakes.MemorySource([{"id": i, "name": f"n{i}", "version": i} for i in range(1, 41)])
    dest = fakes.MemoryDestination()
    dest.poison(*range(1, 41))
    store = fakes.state_store(tmp_path)
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    try:
        assert engine.run("c", "seed").failure_class == "destination"
        calls = len(dest.calls)
        again = engine.run("c", "seed")  # resumes at batch 3: refused whole, trips at once
        assert (again.status, again.failure_class) == ("failed", "destination")
        assert len(dest.calls) - calls == 1
        dest.heal()
        assert engine.run("c", "seed").counts.written == 24  # a good batch closes it
    finally:
        engine.close()
        store.close()


def test_the_daemons_retry_of_one_refused_record_never_trips_it(tmp_path: Path) -> None:
    """A retry sends records the destination refused before: refusing them again says nothing of
    a destination refusing everything. The daemon's retries of one bad record (one Engine, a
    batch of 1 each) go on until `max_attempts` buries it, each run `partial`, never tripped
    (tripped, the record's attempts would stop counting and it would never be buried)."""
    loaded = fakes.sheet(
        {"c": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}, "delivery": {"batch": 8}}},
        tmp_path,
    )
    source = fakes.MemorySource([{"id": i, "name": f"n{i}", "version": i} for i in range(1, 9)])
    dest = fakes.MemoryDestination()
    dest.poison(3)
    store = fakes.state_store(tmp_path)
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    try:
        assert engine.run("c", "seed").counts.rejected == 1  # attempt 1
        for attempt in range(2, 6):
            report = engine.retry("c", trigger="schedule", automatic=True, max_attempts=5)
            assert (report.status, report.counts.rejected) == ("partial", 1), (attempt, report.message)
        assert report.buried == 1
        assert store.open_error_keys("c", None, live_only=True) == []
        assert engine.run("c", "run").status == "success"  # and the next run is not tripped either
    finally:
        engine.close()
        store.close()
