"""STAND-IN for h-auth's module (design19 section 4): the names the pages code against.

The lead keeps h-auth's version of this file at the merge; this one refuses everyone.
"""

from __future__ import annotations

import dataclasses

from fastapi import HTTPException, Request


@dataclasses.dataclass(frozen=True)
class Principal:
    user: str
    role: str
    csrf: str | None
    via: str


def require_viewer(request: Request) -> Principal:
    raise HTTPException(status_code=401, detail="login required")


def require_operator(request: Request) -> Principal:
    raise HTTPException(status_code=401, detail="login required")
