"""`web:`: who may use the dashboard and its JSON API (`mapsync serve`), and how (docs/dashboard.md)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration

_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASH = re.compile(r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})$")
MIN_TOKEN = 24


class WebUser(Model):
    """One dashboard user: a person with a password hash, or a program with a bearer token."""

    role: Literal["viewer", "operator"] = Field(
        description="`viewer` reads every page and API route; `operator` may also act (pause, retry, ...)."
    )
    password_hash: str | None = Field(
        None,
        description=(
            "The scrypt hash of the password, from `mapsync web hash-password` "
            "(`scrypt$N$r$p$<salt>$<hash>`). Never the password itself."
        ),
    )
    token: str | None = Field(
        None,
        description=(
            f"A bearer token (at least {MIN_TOKEN} characters) for programs "
            "(`Authorization: Bearer ...`). Write it as a `${VAR}` reference, never in the file."
        ),
    )

    @field_validator("password_hash")
    @classmethod
    def _hash_shape(cls, value: str | None) -> str | None:
        if value is not None and not _HASH.match(value):  # never echo the value
            raise ValueError("not a hash from `mapsync web hash-password` (scrypt$N$r$p$salt$hash)")
        return value

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_TOKEN:  # never echo the value: it is a secret
            raise ValueError(f"the token needs at least {MIN_TOKEN} characters")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> WebUser:
        if (self.password_hash is None) == (self.token is None):
            raise ValueError("give exactly one of `password_hash` or `token`")
        return self


class WebConfig(Model):
    """The dashboard's users and its security settings. Without `users` (and without
    `anonymous_reads`) the pages and API answer 401; `/metrics`, `/healthz`, `/readyz` and the
    webhook routes are served all the same."""

    users: dict[str, WebUser] = Field(
        default_factory=dict,
        description="Name → user. Names: letters, digits, `_.@-`, at most 64 characters.",
    )
    anonymous_reads: bool = Field(
        False,
        description=(
            "Let anyone read the pages and API without logging in (never act). Only allowed when "
            "`mapsync serve` listens on loopback (127.0.0.1, ::1)."
        ),
    )
    hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names the app answers to (the `Host` header, any port), beside the always allowed "
            "`localhost`, `127.0.0.1` and `[::1]`: add the public name of the reverse proxy. Any "
            "other Host is refused (DNS rebinding)."
        ),
    )
    session_ttl: Duration = Field(
        dt.timedelta(hours=8), description="How long a login session lives (then log in again)."
    )
    secure_cookies: bool = Field(
        True,
        description=(
            "Send the session cookie only over HTTPS (`Secure`; browsers allow it on "
            "http://127.0.0.1 too). Turn off only for plain HTTP on another host during tests."
        ),
    )
    max_body: int = Field(
        65_536,
        gt=0,
        le=16 * 1_048_576,
        description="Largest request body of a page or API request, in bytes (webhooks keep their own).",
    )
    login_attempts: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins allowed per user and per client address in 15 minutes.",
    )

    @field_validator("users")
    @classmethod
    def _user_names(cls, value: dict[str, WebUser]) -> dict[str, WebUser]:
        bad = [name for name in value if not _USER.match(name)]
        if bad:
            raise ValueError(f"user names are letters, digits and _.@- (1-64): {', '.join(map(repr, bad))}")
        return value

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if not _HOST.match(h)]
        if bad:
            raise ValueError(f"not a host name (no port, no scheme): {', '.join(map(repr, bad))}")
        return [h.lower() for h in value]

    @field_validator("session_ttl")
    @classmethod
    def _positive_ttl(cls, value: dt.timedelta) -> dt.timedelta:
        if value <= dt.timedelta(0):
            raise ValueError("session_ttl must be more than 0")
        return value


def secrets_of(web: WebConfig | None) -> list[str]:
    """Tokens and password hashes: redacted wherever text is shown, even when written literally."""
    if web is None:
        return []
    return [s for u in web.users.values() for s in (u.token, u.password_hash) if s]
