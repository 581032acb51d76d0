"""The state ports of the web app (schema v9), re-exported by state/ports.py: web sessions and
the operator audit log. Users live in the sheet (`web: users`), not in the store."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol


class Sessions(Protocol):
    """Operators' web sessions (`store.sessions`, state/sessions.py): an opaque token (only its
    sha256 hex is stored), its user, CSRF token and expiry on the store's clock; revocable."""

    def open_session(self, user: str, ttl: dt.timedelta) -> tuple[str, str]:
        """A new session: (token, csrf), both `secrets.token_urlsafe(32)`."""

    def session(self, token: str) -> dict[str, Any] | None:
        """{user, csrf, expires_at} of a live session; None when unknown, expired or revoked."""

    def touch_session(self, token: str) -> None: ...
    def close_session(self, token: str) -> None: ...
    def close_sessions(self, user: str | None = None) -> int:
        """Revoke the live sessions (all, or one user's): how many."""


class Audit(Protocol):
    """What operators did, from the web or the CLI (`store.audit`), append-only: who, what, on
    which sync, when, with a JSON detail; purged with the run history's retention."""

    def record_action(self, user: str, action: str, sync: str | None, detail: dict[str, Any]) -> int: ...
    def actions(self, sync: str | None, limit: int) -> list[dict[str, Any]]:
        """Rows of id, at (stamp), user, action, sync, detail (dict), newest first."""
