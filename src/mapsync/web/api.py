"""The JSON API (`/api/...`): the read functions (web/readmodel.py) and the actions
(web/actions.py) over HTTP. Reads need a viewer, actions an operator (and, for a browser
session, its CSRF token). A refused action or an unknown thing answers `{"error": "..."}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.web import actions, readmodel, schemas
from mapsync.web.actions import ActionError
from mapsync.web.auth import Principal, require_operator, require_viewer

Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorAnswer},
    422: {"model": schemas.ErrorAnswer},
}

router = APIRouter(prefix="/api", tags=["api"], responses=_ERRORS)


def _ends(request: Request) -> tuple[LoadedSheet, Store]:
    state = request.app.state
    return state.loaded, state.store


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _known(loaded: LoadedSheet, sync: str | None) -> JSONResponse | None:
    if sync is not None and sync not in loaded.sheet.syncs:
        return _error(404, f"no sync {sync!r}")
    return None


def _act(call: Callable[[], dict[str, Any]], status: int = 200) -> Any:
    try:
        answer = call()
    except ActionError as exc:
        return _error(exc.status, exc.message)
    return JSONResponse(answer, status_code=status)


# ------------------------------------------------------------------ reads


@router.get("/overview", response_model=list[schemas.SyncOverview])
def get_overview(request: Request, who: Viewer) -> Any:
    return readmodel.overview(*_ends(request))


@router.get("/syncs/{sync}/runs", response_model=list[schemas.Run])
def get_runs(
    request: Request, who: Viewer, sync: str, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> Any:
    loaded, store = _ends(request)
    return _known(loaded, sync) or readmodel.runs(loaded, store, sync, limit)


@router.get("/runs/{run_id}", response_model=schemas.RunDetail)
def get_run(request: Request, who: Viewer, run_id: schemas.Id) -> Any:
    found = readmodel.run(*_ends(request), run_id)
    return _error(404, f"no run {run_id}") if found is None else found


@router.get("/errors", response_model=list[schemas.RecordError])
def get_errors(
    request: Request,
    who: Viewer,
    sync: str | None = None,
    all_: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Any:
    loaded, store = _ends(request)
    return _known(loaded, sync) or readmodel.errors(loaded, store, sync, all_, limit)


@router.get("/errors/{sync}/{key:path}/trace", response_model=schemas.Trace)
def get_trace(request: Request, who: Viewer, sync: str, key: str) -> Any:
    loaded, store = _ends(request)
    unknown = _known(loaded, sync)
    if unknown is not None:
        return unknown
    found = readmodel.trace(loaded, store, sync, key)
    return _error(404, f"nothing knows key {key!r} of sync {sync!r}") if found is None else found


@router.get("/unmapped", response_model=list[schemas.Unmapped])
def get_unmapped(request: Request, who: Viewer, sync: str | None = None) -> Any:
    loaded, store = _ends(request)
    return _known(loaded, sync) or readmodel.unmapped(loaded, store, sync)


@router.get("/orders", response_model=list[schemas.Orders])
def get_orders(request: Request, who: Viewer, sync: str | None = None) -> Any:
    loaded, store = _ends(request)
    return _known(loaded, sync) or readmodel.orders(loaded, store, sync)


@router.get("/queues", response_model=list[schemas.Queue])
def get_queues(request: Request, who: Viewer) -> Any:
    return readmodel.queues(*_ends(request))


@router.get("/alerts", response_model=list[schemas.Alert])
def get_alerts(request: Request, who: Viewer, all_: Annotated[bool, Query(alias="all")] = False) -> Any:
    return readmodel.alerts(*_ends(request), include_closed=all_)


@router.get("/reconcile", response_model=list[schemas.Reconcile])
def get_reconcile(request: Request, who: Viewer) -> Any:
    return readmodel.reconcile(*_ends(request))


@router.get("/workers", response_model=schemas.Workers)
def get_workers(request: Request, who: Viewer) -> Any:
    return readmodel.workers(*_ends(request))


@router.get("/budgets", response_model=list[schemas.BudgetInfo])
def get_budgets(request: Request, who: Viewer) -> Any:
    return readmodel.budgets(*_ends(request))


@router.get("/audit", response_model=list[schemas.AuditRow])
def get_audit(request: Request, who: Viewer, sync: str | None = None) -> Any:
    loaded, store = _ends(request)
    return _known(loaded, sync) or readmodel.audit(loaded, store, sync)


@router.get("/requests", response_model=list[schemas.Request])
def get_requests(request: Request, who: Viewer) -> Any:
    return readmodel.requests(*_ends(request))


# ------------------------------------------------------------------ actions


@router.post("/syncs/{sync}/pause", response_model=schemas.Done)
def post_pause(request: Request, who: Operator, sync: str, body: schemas.PauseBody | None = None) -> Any:
    note = body.note if body is not None else None
    return _act(lambda: actions.pause(*_ends(request), who, sync, note))


@router.post("/syncs/{sync}/resume", response_model=schemas.Done)
def post_resume(request: Request, who: Operator, sync: str) -> Any:
    return _act(lambda: actions.resume(*_ends(request), who, sync))


@router.post("/syncs/{sync}/run", response_model=schemas.Queued, status_code=202)
def post_run(request: Request, who: Operator, sync: str, body: schemas.RunBody | None = None) -> Any:
    kind = body.kind if body is not None else "run"
    return _act(lambda: actions.run_now(*_ends(request), who, sync, kind), 202)


@router.post("/errors/{sync}/retry", response_model=schemas.Queued, status_code=202)
def post_retry(request: Request, who: Operator, sync: str, body: schemas.KeysBody | None = None) -> Any:
    keys = body.keys if body is not None else None
    return _act(lambda: actions.retry(*_ends(request), who, sync, keys), 202)


@router.post("/errors/{sync}/resolve", response_model=schemas.Done)
def post_resolve(request: Request, who: Operator, sync: str, body: schemas.ResolveBody) -> Any:
    return _act(lambda: actions.resolve(*_ends(request), who, sync, body.keys, body.note))


@router.post("/orders/{sync}/reexport", response_model=schemas.Queued, status_code=202)
def post_reexport(request: Request, who: Operator, sync: str, body: schemas.KeysBody | None = None) -> Any:
    keys = body.keys if body is not None else None
    return _act(lambda: actions.reexport(*_ends(request), who, sync, keys), 202)


@router.post("/alerts/{incident_id}/ack", response_model=schemas.Done)
def post_ack(request: Request, who: Operator, incident_id: schemas.Id) -> Any:
    return _act(lambda: actions.ack_alert(*_ends(request), who, incident_id))


@router.post("/alerts/{incident_id}/silence", response_model=schemas.Done)
def post_silence(request: Request, who: Operator, incident_id: schemas.Id, body: schemas.SilenceBody) -> Any:
    return _act(lambda: actions.silence_alert(*_ends(request), who, incident_id, body.for_))
