"""The dashboard's read pages: each calls one `mapsync.web.readmodel` function and renders it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from mapsync.sheet.loader import LoadedSheet
from mapsync.web import readmodel
from mapsync.web.auth import Principal, require_viewer
from mapsync.web.pages_common import render, state
from mapsync.web.read_common import is_export
from mapsync.web.schemas import Id

router = APIRouter(include_in_schema=False)


def _sync_arg(loaded: LoadedSheet, value: str | None) -> str | None:
    """A `?sync=` filter: None for all; 404 for a sync the sheet does not have (as the API says)."""
    if value and value not in loaded.sheet.syncs:
        raise HTTPException(status_code=404, detail=f"no sync {value!r}")
    return value or None


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, who: Principal = Depends(require_viewer)) -> HTMLResponse:
    loaded, store = state(request)
    return render(request, "overview.html", who, syncs=readmodel.overview(loaded, store), title="Overview")


@router.get("/syncs/{sync}", response_class=HTMLResponse)
def sync_page(
    request: Request, sync: str, limit: int = 50, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    if sync not in _sync_names(loaded):
        raise HTTPException(status_code=404, detail="unknown sync")
    runs = readmodel.runs(loaded, store, sync, max(1, min(limit, 500)))
    return render(request, "sync.html", who, sync=sync, runs=runs, title=f"Runs of {sync}")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: Id, who: Principal = Depends(require_viewer)) -> HTMLResponse:
    loaded, store = state(request)
    run = readmodel.run(loaded, store, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail="no such run")
    return render(request, "run.html", who, run=run, title=f"Run {run_id}")


@router.get("/errors", response_class=HTMLResponse)
def errors_page(
    request: Request, sync: str | None = None, all: bool = False, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    sync = _sync_arg(loaded, sync)
    rows = readmodel.errors(loaded, store, sync, all)
    groups: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("sync")), []).append(row)
    return render(
        request,
        "errors.html",
        who,
        groups=groups,
        sync=sync,
        include_resolved=all,
        syncs=_sync_names(loaded),
        exports=_export_names(loaded),
        title="Record errors",
    )


@router.get("/errors/{sync}/{key:path}", response_class=HTMLResponse)
def trace_page(
    request: Request, sync: str, key: str, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    if sync not in _sync_names(loaded):
        raise HTTPException(status_code=404, detail="unknown sync")
    found = readmodel.trace(loaded, store, sync, key)
    return render(request, "trace.html", who, sync=sync, key=key, trace=found, title=f"Trace of {key}")


@router.get("/unmapped", response_class=HTMLResponse)
def unmapped_page(
    request: Request, sync: str | None = None, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    rows = readmodel.unmapped(loaded, store, _sync_arg(loaded, sync))
    return render(request, "unmapped.html", who, rows=rows, sync=sync, title="Unmapped values")


@router.get("/orders", response_class=HTMLResponse)
def orders_page(
    request: Request, sync: str | None = None, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    rows = readmodel.orders(loaded, store, _sync_arg(loaded, sync))
    return render(request, "orders.html", who, rows=rows, title="Orders (exports)")


@router.get("/queues", response_class=HTMLResponse)
def queues_page(request: Request, who: Principal = Depends(require_viewer)) -> HTMLResponse:
    loaded, store = state(request)
    return render(
        request,
        "queues.html",
        who,
        rows=readmodel.queues(loaded, store),
        requests=readmodel.requests(loaded, store),
        title="Queues",
    )


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request, all: bool = False, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    rows = readmodel.alerts(loaded, store, all)
    return render(request, "alerts.html", who, rows=rows, include_closed=all, title="Alerts")


@router.get("/reconcile", response_class=HTMLResponse)
def reconcile_page(request: Request, who: Principal = Depends(require_viewer)) -> HTMLResponse:
    loaded, store = state(request)
    rows = readmodel.reconcile(loaded, store)
    return render(request, "reconcile.html", who, rows=rows, title="Reconciliation")


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, who: Principal = Depends(require_viewer)) -> HTMLResponse:
    loaded, store = state(request)
    return render(
        request,
        "workers.html",
        who,
        workers=readmodel.workers(loaded, store),
        budgets=readmodel.budgets(loaded, store),
        title="Workers and budgets",
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request, sync: str | None = None, who: Principal = Depends(require_viewer)
) -> HTMLResponse:
    loaded, store = state(request)
    rows = readmodel.audit(loaded, store, _sync_arg(loaded, sync))
    return render(request, "audit.html", who, rows=rows, sync=sync, title="Audit log")


def _sync_names(loaded: LoadedSheet) -> list[str]:
    return list(loaded.sheet.syncs)


def _export_names(loaded: LoadedSheet) -> list[str]:
    return [n for n in loaded.sheet.syncs if is_export(loaded, n)]
