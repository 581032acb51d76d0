"""How a REST connection authenticates: fixed headers (`StaticAuth`) or a bearer token fetched
from a token endpoint and renewed before it expires (`TokenAuth`)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from mapsync import errors
from mapsync.state.clock import SYSTEM, Clock

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("mapsync.rest")


class HttpClient(Protocol):
    """What an authentication needs of its connection's client (`rest.client.HttpClient`)."""

    name: str
    secrets: tuple[str, ...]

    def request(
        self, method: str, path: str, *, json: Any = None, authenticate: bool = True
    ) -> httpx.Response: ...
    def shown(self, text: str) -> str: ...


class Auth(Protocol):
    @property
    def secrets(self) -> tuple[str, ...]:
        """What the authentication sends that must never be shown (redacted wherever shown)."""

    def headers(self, client: HttpClient) -> dict[str, str]:
        """Headers that authenticate one request (may fetch a token first)."""

    def invalidate(self) -> bool:
        """Forget a token the server refused; True if a new one can be fetched."""


class StaticAuth:
    """Fixed headers: bearer token, basic, API key."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        # what the headers carry (`Basic <base64>`'s base64 included): redacted wherever shown
        self.secrets = tuple(dict.fromkeys(x for v in headers.values() for x in (v, v.split(" ", 1)[-1])))

    @staticmethod
    def basic(username: str, password: str) -> StaticAuth:
        raw = base64.b64encode(f"{username}:{password}".encode()).decode()
        return StaticAuth({"Authorization": f"Basic {raw}"})

    def headers(self, client: HttpClient) -> dict[str, str]:
        return self._headers

    def invalidate(self) -> bool:
        return False


class TokenAuth:
    """A bearer token from a token endpoint, renewed `refresh_before` its expiry."""

    def __init__(
        self,
        url: str,
        body: dict[str, str],
        *,
        token_field: str = "token",
        expires_field: str | None = "expiration",
        lifetime: dt.timedelta = dt.timedelta(hours=1),
        refresh_before: dt.timedelta = dt.timedelta(minutes=5),
        clock: Clock = SYSTEM,
    ) -> None:
        self.url, self.body = url, body
        self.clock = clock  # decides when the token is due for renewal (a test moves a ManualClock)
        self.token_field, self.expires_field = token_field, expires_field
        self.lifetime, self.refresh_before = lifetime, refresh_before
        self.token: str | None = None
        self.expires: dt.datetime | None = None
        self.fetched = 0  # tokens fetched, for tests
        self.secrets: tuple[
            str, ...
        ] = ()  # the body's values are the connector's; each token joins the client's
        self._lock = threading.Lock()

    def headers(self, client: HttpClient) -> dict[str, str]:
        with self._lock:
            now = self.clock.now()
            if self.token is None or self.expires is None or now >= self.expires - self.refresh_before:
                self._fetch(client, now)
            return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> bool:
        with self._lock:
            self.token = None
        return True

    def _fetch(self, client: HttpClient, now: dt.datetime) -> None:
        resp = client.request("POST", self.url, json=self.body, authenticate=False)
        if resp.status_code >= 400:
            raise errors.PermanentError(
                f"connection {client.name}: authentication refused (HTTP {resp.status_code}): "
                f"{client.shown(resp.text)}",
                reason=errors.REASON_AUTH,
            )
        try:
            data = resp.json()
            token = data[self.token_field]
        except (ValueError, KeyError, TypeError):
            raise errors.TransientError(
                f"connection {client.name}: token endpoint returned no `{self.token_field}`"
            ) from None
        client.secrets = (*client.secrets, str(token))
        self.token = str(token)
        self.expires = _expiry(
            data.get(self.expires_field) if self.expires_field else None, now, self.lifetime
        )
        self.fetched += 1
        log.info("token_renewed", extra={"action": "token_renewed", "connection": client.name})


def _expiry(value: Any, now: dt.datetime, lifetime: dt.timedelta) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return now + dt.timedelta(seconds=value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        except ValueError:
            pass
    return now + lifetime
