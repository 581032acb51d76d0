"""Who is asking (a minimal stand-in of h-auth's module, same names: the lead keeps h-auth's)."""

from __future__ import annotations

import dataclasses

from fastapi import HTTPException, Request


@dataclasses.dataclass(frozen=True)
class Principal:
    user: str  # "anonymous" for anonymous reads
    role: str  # "viewer" | "operator"
    csrf: str | None  # the session's CSRF token (None for bearer tokens and anonymous)
    via: str  # "session" | "token" | "anonymous"


def require_viewer(request: Request) -> Principal:
    who = getattr(request.state, "principal", None)
    if not isinstance(who, Principal):
        raise HTTPException(401, "login required")
    return who


def require_operator(request: Request) -> Principal:
    who = require_viewer(request)
    if who.role != "operator":
        raise HTTPException(403, "operators only")
    return who
