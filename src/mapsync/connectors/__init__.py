"""Connectors, registered by the `kind` of a connection in the sheet.

A connector opens a handle for a connection and builds the source and destination sides of a
sync on it (the roles of `mapsync.ports`). Later kinds (files, SQL Server) register here instead
of editing the engine. REST and CIMcloud load on first use, so `mapsync --help` imports no HTTP
client.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mapsync import errors
from mapsync.ports import Destination, Handle, Source
from mapsync.sheet import models

if TYPE_CHECKING:
    from mapsync.state.ports import Store


class Connector(Protocol):
    def connect(self, name: str, cfg: models.Connection, folder: Path, store: Store | None = None) -> Handle:
        """A handle (engine, HTTP client) for one configured connection; it has `close()`.

        `store` (the state store) lets an HTTP connection share its call budget across processes
        and keep its async batches."""

    def source(self, handle: Handle, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Source:
        """The reading side of a sync."""

    def destination(
        self, handle: Handle, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]
    ) -> Destination:
        """The writing side of a sync."""


def wrong_kind(what: str, given: object) -> errors.ConfigError:
    """A handle or connection of another connector handed to this one (a bug of the caller)."""
    return errors.ConfigError(f"{what}: got {type(given).__name__}")


class SqlConnector:
    def connect(self, name: str, cfg: models.Connection, folder: Path, store: Store | None = None) -> Handle:
        from mapsync.connectors.sql import SqlDatabase

        if not isinstance(cfg, models.SqlConnection):
            raise wrong_kind(f"connection {name}: the SQL connector needs a SQL connection", cfg)
        return SqlDatabase(name, cfg.url, folder, cfg.timezone, cfg.timeouts)

    def source(self, handle: Handle, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Source:
        from mapsync.connectors.sql import SqlDatabase
        from mapsync.connectors.sql_source import SqlSource

        if not isinstance(handle, SqlDatabase):
            raise wrong_kind(f"sync {sync}: the SQL source needs a SQL connection", handle)
        return SqlSource(handle, sync, cfg, version_column)

    def destination(
        self, handle: Handle, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]
    ) -> Destination:
        from mapsync.connectors.sql import SqlDatabase
        from mapsync.connectors.sql_destination import SqlDestination

        if not isinstance(handle, SqlDatabase):
            raise wrong_kind(f"sync {sync}: the SQL destination needs a SQL connection", handle)
        return SqlDestination(handle, sync, cfg, secrets)


class Lazy:
    """A connector whose module loads on first use (HTTP clients only when a sheet needs them)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self._loaded: Connector | None = None

    def load(self) -> Connector:
        if self._loaded is None:
            cls: type[Connector] = getattr(importlib.import_module(self.module), self.name)
            self._loaded = cls()
        return self._loaded

    def connect(self, name: str, cfg: models.Connection, folder: Path, store: Store | None = None) -> Handle:
        return self.load().connect(name, cfg, folder, store)

    def source(self, handle: Handle, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Source:
        return self.load().source(handle, sync, cfg, version_column)

    def destination(
        self, handle: Handle, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]
    ) -> Destination:
        return self.load().destination(handle, sync, cfg, secrets)


REGISTRY: dict[str, Connector] = {
    "sql": SqlConnector(),
    "rest": Lazy("mapsync.rest.connector", "RestConnector"),
    "cimcloud": Lazy("mapsync.cimcloud.connector", "CimcloudConnector"),
}
