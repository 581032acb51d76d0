"""What an operator may do from the dashboard or the API: each action validates, writes only to
the state store (no engine runs in a request), records an audit row and returns a dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mapsync.sheet.duration import parse_duration
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.web.auth import Principal
from mapsync.web.read_common import is_export, v9


class ActionError(Exception):
    """A refused action: `status` is the HTTP status (404 unknown, 422 not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _sync(loaded: LoadedSheet, sync: str) -> None:
    if sync not in loaded.sheet.syncs:
        raise ActionError(404, f"no sync {sync!r}")


def _audit(store: Store, who: Principal, action: str, sync: str | None, detail: dict[str, Any]) -> None:
    v9(store).audit.record_action(who.user, action, sync, detail)


def _keys(keys: Sequence[str] | None) -> list[str] | None:
    if keys is None:
        return None
    clean = [k for k in keys if k]
    if not clean:
        raise ActionError(422, "keys is empty: send null for all")
    return clean


def pause(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, note: str | None = None
) -> dict[str, Any]:
    _sync(loaded, sync)
    store.pause(sync, who.user, note or None)
    _audit(store, who, "pause", sync, {"note": note})
    return {"sync": sync, "paused": True}


def resume(loaded: LoadedSheet, store: Store, who: Principal, sync: str) -> dict[str, Any]:
    _sync(loaded, sync)
    was = store.resume(sync)
    _audit(store, who, "resume", sync, {"was_paused": was})
    return {"sync": sync, "paused": False, "was_paused": was}


def run_now(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, kind: str = "run"
) -> dict[str, Any]:
    _sync(loaded, sync)
    if kind not in ("run", "overlap"):
        raise ActionError(422, f"kind must be run or overlap, not {kind!r}")
    request = store.request_run(sync, kind, who.user)
    _audit(store, who, "run", sync, {"kind": kind, "request": request})
    return {"request": request}


def _queue(store: Store, sync: str, kind: str, who: Principal, keys: list[str] | None) -> int:
    if keys is None:
        return store.request_run(sync, kind, who.user)
    return int(v9(store).request_run(sync, kind, who.user, keys=keys))


def _open_keys(store: Store, sync: str) -> set[str]:
    return set(store.open_error_versions(sync))


def retry(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None
) -> dict[str, Any]:
    _sync(loaded, sync)
    wanted = _keys(keys)
    if wanted is not None:
        missing = sorted(set(wanted) - _open_keys(store, sync))
        if missing:
            raise ActionError(404, f"no open record error for key(s) {', '.join(missing[:5])}")
    request = _queue(store, sync, "retry", who, wanted)
    _audit(store, who, "retry", sync, {"keys": wanted, "request": request})
    return {"request": request}


def resolve(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None, note: str
) -> dict[str, Any]:
    _sync(loaded, sync)
    if not note or not note.strip():
        raise ActionError(422, "a note is required to resolve record errors")
    wanted = _keys(keys)
    if wanted is not None:
        missing = sorted(set(wanted) - _open_keys(store, sync))
        if missing:
            raise ActionError(404, f"no open record error for key(s) {', '.join(missing[:5])}")
    done = int(v9(store).resolve_errors(sync, wanted, who.user, note))
    _audit(store, who, "resolve", sync, {"keys": wanted, "note": note, "resolved": done})
    return {"sync": sync, "resolved": done}


def reexport(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None
) -> dict[str, Any]:
    _sync(loaded, sync)
    if not is_export(loaded, sync):
        raise ActionError(422, f"sync {sync!r} is not an export (changes.method: export_flag)")
    wanted = _keys(keys)
    request = _queue(store, sync, "reexport", who, wanted)
    _audit(store, who, "reexport", sync, {"keys": wanted, "request": request})
    return {"request": request}


def _incident(store: Store, incident_id: int) -> str | None:
    found = store.incidents.incident(incident_id)
    if found is None:
        raise ActionError(404, f"no incident {incident_id}")
    if found.status != "open":
        raise ActionError(422, f"incident {incident_id} is {found.status}")
    return found.sync


def ack_alert(loaded: LoadedSheet, store: Store, who: Principal, incident_id: int) -> dict[str, Any]:
    sync = _incident(store, incident_id)
    store.incidents.ack(incident_id, who.user)
    _audit(store, who, "ack", sync, {"incident": incident_id})
    return {"incident": incident_id, "acked_by": who.user}


def silence_alert(
    loaded: LoadedSheet, store: Store, who: Principal, incident_id: int, for_: str
) -> dict[str, Any]:
    try:
        span = parse_duration(for_)
    except (ValueError, TypeError) as exc:
        raise ActionError(422, f"bad duration {for_!r}: {exc}") from None
    sync = _incident(store, incident_id)
    until = store.workers.now() + span
    store.incidents.silence(incident_id, until, who.user)
    _audit(store, who, "silence", sync, {"incident": incident_id, "for": for_})
    return {"incident": incident_id, "silenced_until": until.isoformat()}
