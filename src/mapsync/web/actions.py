"""What an operator may do from the dashboard or the API: each action validates, writes only to
the state store (no engine runs in a request), records an audit row and returns a dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mapsync import keys as key_forms
from mapsync import records
from mapsync.sheet.duration import parse_silence
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.web.auth import Principal
from mapsync.web.read_common import is_export


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
    store.audit.record_action(who.user, action, sync, {**detail, "via": "web"})


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
    return int(store.request_run(sync, kind, who.user, keys=keys))


def _parsed(loaded: LoadedSheet, sync: str, given: list[str]) -> list[tuple[str, ...]]:
    """Keys as written on the command line (`1001`, `col=value,col=value`), parsed with the
    sync's key columns; 422 naming the one that does not parse."""
    columns = key_forms.columns_of(loaded.sheet, sync)
    try:
        return [key_forms.parse_arg(k, columns) for k in given]
    except ValueError as exc:
        raise ActionError(422, str(exc)) from None


def _open_errors(loaded: LoadedSheet, store: Store, sync: str, given: list[str]) -> list[records.Key]:
    """The stored key of the open record error each given key names (dead ones included, as
    `mapsync retry` sends them); 404 naming the keys that have none."""
    hits = key_forms.find(store.open_error_keys(sync), _parsed(loaded, sync, given))
    missing = [arg for arg, hit in zip(given, hits, strict=True) if hit is None]
    found = list(dict.fromkeys(hit for hit in hits if hit is not None))
    if missing:
        raise ActionError(404, f"no open record error for key(s) {', '.join(missing[:5])}")
    return found


def _args(loaded: LoadedSheet, sync: str, found: Sequence[tuple[Any, ...]]) -> list[str]:
    """Keys in their command-line form, the one form run requests carry (the daemon parses it)."""
    columns = key_forms.columns_of(loaded.sheet, sync)
    return list(dict.fromkeys(key_forms.to_arg(k, columns) for k in found))


def retry(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None
) -> dict[str, Any]:
    """A run request retrying the open record errors of `keys` (command-line form; None: all)."""
    _sync(loaded, sync)
    wanted = _keys(keys)
    chosen = None if wanted is None else _args(loaded, sync, _open_errors(loaded, store, sync, wanted))
    request = _queue(store, sync, "retry", who, chosen)
    _audit(store, who, "retry", sync, {"keys": chosen, "request": request})
    return {"request": request}


def resolve(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None, note: str
) -> dict[str, Any]:
    """Close the open record errors of `keys` (None: all of the sync's) with a note."""
    _sync(loaded, sync)
    if not note or not note.strip():
        raise ActionError(422, "a note is required to resolve record errors")
    wanted = _keys(keys)
    found = None if wanted is None else _open_errors(loaded, store, sync, wanted)
    texts = None if found is None else [records.key_text(k) for k in found]
    done = int(store.resolve_errors(sync, texts, who.user, note))
    chosen = None if found is None else _args(loaded, sync, found)
    _audit(store, who, "resolve", sync, {"keys": chosen, "note": note, "resolved": done})
    return {"sync": sync, "resolved": done}


def reexport(
    loaded: LoadedSheet, store: Store, who: Principal, sync: str, keys: Sequence[str] | None
) -> dict[str, Any]:
    """A run request re-exporting `keys` (command-line form), or every failed transaction."""
    _sync(loaded, sync)
    if not is_export(loaded, sync):
        raise ActionError(422, f"sync {sync!r} is not an export (changes.method: export_flag)")
    wanted = _keys(keys)
    chosen = None if wanted is None else _args(loaded, sync, _parsed(loaded, sync, wanted))
    request = _queue(store, sync, "reexport", who, chosen)
    _audit(store, who, "reexport", sync, {"keys": chosen, "request": request})
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
        span = parse_silence(for_)
    except (ValueError, TypeError) as exc:
        raise ActionError(422, f"bad duration {for_!r}: {exc}") from None
    sync = _incident(store, incident_id)
    until = store.workers.now() + span
    store.incidents.silence(incident_id, until, who.user)
    _audit(store, who, "silence", sync, {"incident": incident_id, "for": for_, "until": until.isoformat()})
    return {"incident": incident_id, "silenced_until": until.isoformat()}
