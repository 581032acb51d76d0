"""The dashboard's form posts: each calls one `mapsync.web.actions` function, then 303 back (PRG).

The forms work without JavaScript; htmx only enhances them. `require_operator` checks the role
and the form's `csrf` field. A refused action (`ActionError`) comes back as an error flash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mapsync.web import actions
from mapsync.web.auth import Principal, require_operator
from mapsync.web.pages_common import local_path, redirect, state
from mapsync.web.schemas import MAX_NOTE, Id

router = APIRouter(prefix="/actions", include_in_schema=False)


async def _form(request: Request) -> tuple[dict[str, str], list[str]]:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    keys = [k.strip() for k in form.getlist("key") if isinstance(k, str) and k.strip()]
    return fields, keys


async def _act(
    request: Request, to: str, call: Callable[[Any], dict[str, Any]], done: Callable[[dict[str, Any]], str]
) -> Response:
    """Run the action off the event loop (it waits on the state store), then go back to `to`
    with its outcome as the flash message."""
    try:
        result = await run_in_threadpool(call, actions)
    except actions.ActionError as e:
        return redirect(request, to, e.message, kind="error")
    return redirect(request, to, done(result))


def _queued(what: str) -> Callable[[dict[str, Any]], str]:
    def text(result: dict[str, Any]) -> str:
        req = result.get("request")
        return f"{what} queued (request {req})." if req is not None else f"{what} queued."

    return text


@router.post("/syncs/{sync}/pause")
async def pause(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, _ = await _form(request)
    loaded, store = state(request)
    note = fields.get("note", "").strip()[:MAX_NOTE] or None
    to = local_path(fields.get("next"), "/")
    return await _act(
        request, to, lambda m: m.pause(loaded, store, who, sync, note), lambda _: f"{sync} paused."
    )


@router.post("/syncs/{sync}/resume")
async def resume(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, _ = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), "/")
    return await _act(request, to, lambda m: m.resume(loaded, store, who, sync), lambda _: f"{sync} resumed.")


@router.post("/syncs/{sync}/run")
async def run_now(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, _ = await _form(request)
    loaded, store = state(request)
    kind = fields.get("kind", "run") or "run"
    to = local_path(fields.get("next"), "/")
    return await _act(
        request, to, lambda m: m.run_now(loaded, store, who, sync, kind), _queued(f"A {kind} of {sync}")
    )


@router.post("/errors/{sync}/retry")
async def retry(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, keys = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), f"/errors?sync={sync}")
    chosen: list[str] | None = None if fields.get("all_open") == "1" else keys or None
    if chosen is None and fields.get("all_open") != "1":
        return redirect(request, to, "Select the records to retry (or use Retry all open).", kind="error")
    what = f"Retry of {len(keys)} record(s)" if chosen else f"Retry of every open error of {sync}"
    return await _act(request, to, lambda m: m.retry(loaded, store, who, sync, chosen), _queued(what))


@router.post("/errors/{sync}/resolve")
async def resolve(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, keys = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), f"/errors?sync={sync}")
    note = fields.get("note", "").strip()
    if not note:
        return redirect(request, to, "A resolve needs a note (why the error needs no retry).", kind="error")
    if len(note) > MAX_NOTE:
        return redirect(request, to, f"The note is over {MAX_NOTE} characters.", kind="error")
    chosen: list[str] | None = None if fields.get("all_open") == "1" else keys or None
    if chosen is None and fields.get("all_open") != "1":
        return redirect(request, to, "Select the records to resolve.", kind="error")

    def done(result: dict[str, Any]) -> str:
        n = result.get("resolved")
        return f"{n} error(s) resolved." if n is not None else "Errors resolved."

    return await _act(request, to, lambda m: m.resolve(loaded, store, who, sync, chosen, note), done)


@router.post("/orders/{sync}/reexport")
async def reexport(request: Request, sync: str, who: Principal = Depends(require_operator)) -> Response:
    fields, keys = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), "/orders")
    chosen: list[str] | None = keys or None
    if chosen is None and fields.get("all_failed") != "1":
        return redirect(request, to, "Select the orders to re-export.", kind="error")
    what = f"Re-export of {len(keys)} order(s)" if chosen else f"Re-export of the failed orders of {sync}"
    return await _act(request, to, lambda m: m.reexport(loaded, store, who, sync, chosen), _queued(what))


@router.post("/alerts/{incident_id}/ack")
async def ack(request: Request, incident_id: Id, who: Principal = Depends(require_operator)) -> Response:
    fields, _ = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), "/alerts")
    return await _act(
        request,
        to,
        lambda m: m.ack_alert(loaded, store, who, incident_id),
        lambda _: f"Alert {incident_id} acknowledged.",
    )


@router.post("/alerts/{incident_id}/silence")
async def silence(request: Request, incident_id: Id, who: Principal = Depends(require_operator)) -> Response:
    fields, _ = await _form(request)
    loaded, store = state(request)
    to = local_path(fields.get("next"), "/alerts")
    for_ = fields.get("for", "").strip() or "2h"
    return await _act(
        request,
        to,
        lambda m: m.silence_alert(loaded, store, who, incident_id, for_),
        lambda _: f"Alert {incident_id} silenced for {for_}.",
    )
