"""Connectors, registered by the `kind` of a connection in the sheet.

A connector opens a handle for a connection and builds the source and destination sides of a
sync on it. Later kinds (REST, CIMcloud, files) register here instead of editing the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mapsync.sheet import models


class Connector(Protocol):
    def connect(self, name: str, cfg: Any, folder: Path, store: Any = None) -> Any:
        """A handle (engine, HTTP client) for one configured connection; it has `close()`.

        `store` (the state store) lets an HTTP connection share its call budget across processes."""

    def source(self, handle: Any, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Any:
        """The reading side of a sync."""

    def destination(self, handle: Any, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]) -> Any:
        """The writing side of a sync."""


class SqlConnector:
    def connect(self, name: str, cfg: Any, folder: Path, store: Any = None) -> Any:
        from mapsync.connectors.sql import SqlDatabase

        return SqlDatabase(name, cfg.url, folder, cfg.timezone, cfg.timeouts)

    def source(self, handle: Any, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Any:
        from mapsync.connectors.sql_source import SqlSource

        return SqlSource(handle, sync, cfg, version_column)

    def destination(self, handle: Any, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]) -> Any:
        from mapsync.connectors.sql_destination import SqlDestination

        return SqlDestination(handle, sync, cfg, secrets)


class _Lazy:
    """A connector whose module loads on first use (HTTP clients only when a sheet needs them)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _get(self) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)()

    def connect(self, name: str, cfg: Any, folder: Path, store: Any = None) -> Any:
        return self._get().connect(name, cfg, folder, store)

    def source(self, handle: Any, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Any:
        return self._get().source(handle, sync, cfg, version_column)

    def destination(self, handle: Any, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]) -> Any:
        return self._get().destination(handle, sync, cfg, secrets)


REGISTRY: dict[str, Connector] = {
    "sql": SqlConnector(),
    "rest": _Lazy("mapsync.rest.connector", "RestConnector"),
    "cimcloud": _Lazy("mapsync.cimcloud.connector", "CimcloudConnector"),
}
