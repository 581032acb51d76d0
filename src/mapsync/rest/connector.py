"""The `rest` connector: a generic JSON API (registered in `mapsync.connectors.REGISTRY`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync import errors
from mapsync.ports import Destination, Handle, Source
from mapsync.redact import basic_credentials
from mapsync.rest.client import HttpClient, StaticAuth, TokenAuth, make_budget
from mapsync.rest.destination import RestDestination
from mapsync.rest.destructive_source import DestructiveSource
from mapsync.rest.source import RestHandle, RestSource
from mapsync.sheet import models
from mapsync.sheet.connection_models import RestConnection

if TYPE_CHECKING:
    from mapsync.state.ports import Store


def open_handle(name: str, cfg: RestConnection, store: Any = None, **kwargs: Any) -> RestHandle:
    auth: Any = None
    secrets: tuple[str, ...] = ()
    user = ""
    a = cfg.auth
    if a is not None:
        if a.type == "bearer":
            auth, secrets, user = (
                StaticAuth({"Authorization": f"Bearer {a.token}"}),
                (a.token,),
                _digest(a.token),
            )
        elif a.type == "basic":
            auth, user = StaticAuth.basic(a.username, a.password), a.username
            secrets = (a.password, basic_credentials(a.username, a.password))
        elif a.type == "api_key":
            auth, secrets, user = StaticAuth({a.header: a.value}), (a.value,), _digest(a.value)
        else:
            auth = TokenAuth(
                a.url,
                dict(a.body),
                token_field=a.token_field,
                expires_field=a.expires_field,
                lifetime=a.lifetime,
                refresh_before=a.refresh_before,
            )
            secrets = tuple(a.body.values())
            user = _digest(",".join(a.body.values()))
    client = HttpClient(
        name,
        cfg.base_url,
        timeout=cfg.timeout,
        retry=cfg.retry,
        max_concurrency=cfg.max_concurrency,
        auth=auth,
        budget=make_budget(store, f"rest:{cfg.base_url}:{user}", cfg.budget),
        headers=dict(cfg.headers),
        secrets=secrets,
        **kwargs,
    )
    return RestHandle(name, cfg, client, store)


def check(handle: RestHandle) -> dict[str, Any]:
    """Reachability and login (`RestHandle.check`)."""
    return handle.check()


def _digest(secret: str) -> str:
    """Names a credential in the shared budget without revealing it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class RestConnector:
    def connect(self, name: str, cfg: models.Connection, folder: Path, store: Store | None = None) -> Handle:
        if not isinstance(cfg, RestConnection):
            raise errors.ConfigError(
                f"connection {name}: the REST connector needs a REST connection: got {type(cfg).__name__}"
            )
        return open_handle(name, cfg, store)

    def source(self, handle: Handle, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Source:
        if not isinstance(handle, RestHandle):
            raise errors.ConfigError(
                f"sync {sync}: the REST source needs a REST connection: got {type(handle).__name__}"
            )
        if cfg.changes.method == "export_flag":  # a destructive resource: read through the inbox only
            return DestructiveSource(handle, sync, cfg, version_column)
        return RestSource(handle, sync, cfg, version_column)

    def destination(
        self, handle: Handle, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]
    ) -> Destination:
        if not isinstance(handle, RestHandle):
            raise errors.ConfigError(
                f"sync {sync}: the REST destination needs a REST connection: got {type(handle).__name__}"
            )
        return RestDestination(handle, sync, cfg, secrets)
