"""The dashboard's actions over a real SQLite state store: each writes only to the store, is
audited, and refuses what it must (unknown sync 404, not an export 422, bad key 404)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mapsync import daemon_jobs
from mapsync.web import actions, readmodel
from mapsync.web.actions import ActionError
from mapsync.web.auth import Principal
from tests.integration.web.world import World, world

ALICE = Principal(user="alice", role="operator", csrf=None, via="token")


@pytest.fixture
def w(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[World]:
    made = world(tmp_path, sqlite_database)
    yield made
    made.close()


def _audited(w: World) -> list[tuple[str, str, str | None]]:
    return [(r["user"], r["action"], r["sync"]) for r in readmodel.audit(w.loaded, w.store)]


def test_pause_and_resume_are_stored_and_audited(w: World) -> None:
    assert actions.pause(w.loaded, w.store, ALICE, "items", "deploy") == {"sync": "items", "paused": True}
    assert w.store.paused()["items"].by == "alice" and w.store.paused()["items"].note == "deploy"
    assert actions.resume(w.loaded, w.store, ALICE, "items")["was_paused"] is True
    assert "items" not in w.store.paused()
    assert _audited(w) == [("alice", "resume", "items"), ("alice", "pause", "items")]


def test_run_now_queues_a_request_and_runs_nothing(w: World) -> None:
    runs_before = len(w.store.history.runs("items", 10))
    answer = actions.run_now(w.loaded, w.store, ALICE, "items", "overlap")
    (request,) = w.store.requests("items", 10)
    assert answer == {"request": request.id}
    assert (request.kind, request.requested_by, request.status) == ("overlap", "alice", "new")
    assert len(w.store.history.runs("items", 10)) == runs_before
    with pytest.raises(ActionError) as bad:
        actions.run_now(w.loaded, w.store, ALICE, "items", "seed")
    assert bad.value.status == 422


def test_retry_of_all_open_errors_queues_a_retry(w: World) -> None:
    answer = actions.retry(w.loaded, w.store, ALICE, "items", None)
    (request,) = w.store.requests("items", 10)
    assert answer == {"request": request.id} and request.kind == "retry"
    assert _audited(w) == [("alice", "retry", "items")]


def test_refusals(w: World) -> None:
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: actions.pause(w.loaded, w.store, ALICE, "nope", None), 404),
        (lambda: actions.retry(w.loaded, w.store, ALICE, "items", ["[404]"]), 404),
        (lambda: actions.retry(w.loaded, w.store, ALICE, "items", []), 422),
        (lambda: actions.reexport(w.loaded, w.store, ALICE, "items", None), 422),
        (lambda: actions.resolve(w.loaded, w.store, ALICE, "items", None, "  "), 422),
        (lambda: actions.ack_alert(w.loaded, w.store, ALICE, 999), 404),
        (lambda: actions.silence_alert(w.loaded, w.store, ALICE, 999, "2h"), 404),
        (lambda: actions.silence_alert(w.loaded, w.store, ALICE, 1, "soon"), 422),
        (lambda: actions.silence_alert(w.loaded, w.store, ALICE, 1, "3000000d"), 422),  # past year 9999
        (lambda: actions.silence_alert(w.loaded, w.store, ALICE, 1, "367d"), 422),
        (lambda: actions.silence_alert(w.loaded, w.store, ALICE, 1, "0s"), 422),
    ]
    for call, status in cases:
        with pytest.raises(ActionError) as refused:
            call()
        assert refused.value.status == status, refused.value.message
    assert w.store.requests("items", 10) == [] and _audited(w) == []


def test_ack_and_silence_an_open_incident(w: World) -> None:
    from mapsync.state.data import Finding

    incident, _ = w.store.incidents.raise_incident(
        Finding("failed_run", "items", "critical", "config", "sync items failed"), []
    )
    assert actions.ack_alert(w.loaded, w.store, ALICE, incident.id)["acked_by"] == "alice"
    silenced = actions.silence_alert(w.loaded, w.store, ALICE, incident.id, "2h")
    got = w.store.incidents.incident(incident.id)
    assert got is not None and got.acked_by == "alice" and got.silenced_by == "alice"
    assert got.silenced_until is not None and silenced["silenced_until"].startswith(
        str(got.silenced_until.date())
    )
    assert _audited(w) == [("alice", "silence", "items"), ("alice", "ack", "items")]


def test_retry_of_one_key_carries_it(w: World) -> None:
    key = readmodel.errors(w.loaded, w.store, "items")[0]["key"]
    actions.retry(w.loaded, w.store, ALICE, "items", [key])
    (request,) = w.store.requests("items", 10)
    assert request.keys == (key,)  # type: ignore[attr-defined]


def test_the_key_the_dashboard_shows_is_the_one_the_daemon_runs(w: World) -> None:
    """The errors list shows keys as on the command line; a retry of one queues it in that form,
    and the daemon's worker parses it to the same open record error (nothing missing)."""
    shown = sorted(r["key"] for r in readmodel.errors(w.loaded, w.store, "items"))
    assert shown and all(not k.startswith("[") for k in shown), shown
    actions.retry(w.loaded, w.store, ALICE, "items", [shown[0], f"id={shown[0]}"])
    (request,) = w.store.requests("items", 10)
    assert request.keys == (shown[0],)
    job = daemon_jobs.Job("retry", "request", request_id=request.id, keys=request.keys)
    ask = daemon_jobs.asked(w.loaded, w.store, "items", job)
    assert ask.refused is None and ask.missing == () and ask.keys is not None
    with pytest.raises(ActionError) as refused:
        actions.retry(w.loaded, w.store, ALICE, "items", ["[1]", "no-such-key"])
    assert refused.value.status == 404 and "no-such-key" in refused.value.message


def test_resolve_one_key_with_a_note(w: World) -> None:
    key = readmodel.errors(w.loaded, w.store, "items")[0]["key"]
    assert actions.resolve(w.loaded, w.store, ALICE, "items", [key], "fixed by hand")["resolved"] == 1
    left = readmodel.errors(w.loaded, w.store, "items")
    assert key not in [r["key"] for r in left] and len(left) == 1
    done = next(r for r in readmodel.errors(w.loaded, w.store, "items", True) if r["key"] == key)
    assert done["resolved_by"] == "alice" and done["resolved_note"] == "fixed by hand"


def test_reexport_of_an_export_sync_queues_a_request(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    made = world(tmp_path, sqlite_database, export=True)
    try:
        answer = actions.reexport(made.loaded, made.store, ALICE, "orders", None)
        (request,) = made.store.requests("orders", 10)
        assert answer == {"request": request.id} and request.kind == "reexport"
        assert _audited(made) == [("alice", "reexport", "orders")]
    finally:
        made.close()
