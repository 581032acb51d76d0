"""What a worker checks of an operator's retry or reexport request before it runs it
(`daemon_jobs.asked`) and what it answers after (`shortfall`): keys parsed with the sync's key
columns as the CLI parses them, a bad key, a key with no open record error, a re-export of a sync
that is no export, keys on a kind that takes none: each refused with its message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mapsync import records
from mapsync.daemon_jobs import Asked, Job, asked, shortfall
from mapsync.records import RunKind, RunStatus
from mapsync.run_types import RunReport
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.memory import MemoryStore
from mapsync.state.store import Counts
from mapsync.testing import fakes

LINES = {"key": {"from": ["order_no", "line_no"], "to": ["order_no", "line_no"]}, "fields": {"q": "qty"}}


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedSheet:
    return fakes.sheet({"lines": LINES}, tmp_path)


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    lease = s.leases.acquire("lines", dt.timedelta(minutes=1))
    run_id = s.start_run("lines", "run", "test", lease.token)
    rejected = [records.Rejection((7, 2), "too long", "q", "length", 1, None)]
    s.commit(
        sync="lines",
        token=lease.token,
        run_id=run_id,
        delivered=[],
        rejected=rejected,
        cursors={},
        counts=Counts(),
        lease_ttl=lease.ttl,
    )
    return s


def _job(kind: str, *keys: str) -> Job:
    return Job(kind, "request", request_id=1, keys=keys)


def test_keys_are_parsed_in_key_column_order_and_matched_to_the_open_errors(
    loaded: LoadedSheet, store: MemoryStore
) -> None:
    ask = asked(loaded, store, "lines", _job("retry", "line_no=2,order_no=7", "order_no=8,line_no=1"))
    assert ask == Asked(keys=[("7", "2"), ("8", "1")], missing=("order_no=8,line_no=1",))
    assert asked(loaded, store, "lines", Job("retry", "request", request_id=1)) == Asked()


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (_job("retry", "7"), "key '7': write it as order_no=VALUE,line_no=VALUE"),
        (_job("retry", "order_no=7,line=2"), "unknown key column 'line'"),
        (_job("retry", "order_no=7"), "missing line_no"),
        (_job("retry", "order_no=9,line_no=9"), "not found (no open record error): order_no=9,line_no=9"),
        (_job("retry"), "no keys named"),
        (_job("run", "order_no=7,line_no=2"), "a run request takes no keys"),
        (_job("reexport"), "sync lines is no export"),
        (Job("reexport", "request", request_id=1), "sync lines is no export"),
    ],
)
def test_a_request_that_cannot_run_is_refused_with_its_message(
    loaded: LoadedSheet, store: MemoryStore, job: Job, message: str
) -> None:
    ask = asked(loaded, store, "lines", job)
    assert ask.refused is not None and message in ask.refused and ask.keys is None


def test_the_answer_names_the_keys_a_run_could_not_reach(loaded: LoadedSheet) -> None:
    def report(kind: RunKind, gone: list[records.Key]) -> RunReport:
        return RunReport("lines", kind, 5, RunStatus.SUCCESS, Counts(), gone=gone)

    columns = ["order_no", "line_no"]
    wanted: list[tuple[str, ...]] = [("7", "2"), ("8", "1")]
    assert shortfall(Asked(keys=wanted), report(RunKind.RETRY, []), columns) is None
    assert shortfall(Asked(keys=wanted, missing=("x",)), report(RunKind.RETRY, []), columns) == (
        "not found (no open record error): x"
    )
    gone = report(RunKind.REEXPORT, [(8, 1)])
    assert (
        shortfall(Asked(keys=wanted), gone, columns) == "not found (not at the source): order_no=8,line_no=1"
    )
    assert shortfall(Asked(), gone, columns) is None  # the failed ones: nothing was named
