"""The sandbox's own control routes under `/_sandbox/` (not CIMcloud's; no auth, not logged), so a
test can watch and steer a sandbox served in another process:

- `GET /_sandbox/requests`: the log of every request (time, method, path, status, credential);
- `GET /_sandbox/orders`: the stored orders with their lines (`Sandbox.orders()`);
- `POST /_sandbox/faults` with a JSON object of `Faults` fields: sets those fields, answers
  every field's value. Only from a loopback client (403 otherwise); 400 on an unknown field or a
  value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response

Rows = Callable[[], list[dict[str, Any]]]


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fault_errors(faults: Any, body: Any) -> list[str]:
    """Why `body` cannot be applied to `faults` (empty: it can)."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object of fault fields"]
    fields = {f.name for f in dataclasses.fields(faults)}
    errors = []
    for name, value in body.items():
        current = getattr(faults, name, None)
        if name not in fields:
            errors.append(f"unknown fault {name!r} (known: {', '.join(sorted(fields))})")
        elif isinstance(current, int) and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            errors.append(f"{name} must be a whole number >= 0")
        elif isinstance(current, dict) and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            errors.append(f"{name} must be an object of strings")
    return errors


def add_routes(app: FastAPI, requests: Rows, orders: Rows, faults: Callable[[], Any]) -> None:
    """Register the control routes on `app` (before its catch-all route): `requests()` and
    `orders()` give what the GETs answer, `faults()` the sandbox's `Faults` (set in place)."""

    @app.get("/_sandbox/requests")
    def requests_log() -> Any:  # the log of every request: time, method, path, status, credential
        return requests()

    @app.get("/_sandbox/orders")
    def orders_now() -> Any:
        return orders()

    @app.post("/_sandbox/faults")
    async def set_faults(request: Request) -> Response:
        if not _loopback(request):
            return answer(403, {"message": "Faults are set from loopback only."}, {})
        try:
            body = await request.json()
        except ValueError:
            body = None
        current = faults()
        errors = fault_errors(current, body)
        if errors:
            return answer(400, {"message": "; ".join(errors)}, {})
        for name, value in body.items():
            setattr(current, name, dict(value) if isinstance(value, dict) else value)
        return answer(200, dataclasses.asdict(current), {})


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def answer(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)
