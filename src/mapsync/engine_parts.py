"""A sync's parts, built once and reused: the part of `Engine` (engine.py) that opens the
connections, builds each sync's source, destination, compiled mapping and capture on its first
run, and hands the same members to its later runs while the catalogs keep their mark (see
docs/design.md, "Parts are built once per sync")."""

from __future__ import annotations

import dataclasses
from typing import cast

from mapsync import capture, connectors, crash, errors, run_columnar, run_failures
from mapsync import mapping as compile_
from mapsync.connectors import catalog_mark
from mapsync.connectors.catalog_mark import Mark
from mapsync.lease_watch import LeaseWatch
from mapsync.ports import ColumnarSource, Destination, Handle
from mapsync.run_types import Parts
from mapsync.sheet import models
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store


class PartsCache:
    """The connections and the cached parts of an Engine (a mixin: `Engine.__init__` sets the
    attributes below)."""

    loaded: LoadedSheet
    sheet: models.Sheet
    store: Store
    watch: LeaseWatch
    _dbs: dict[str, Handle]
    _marks: dict[str, Mark]  # per connection: its catalog mark at its first build
    _built: dict[str, Parts]  # per sync: its parts, reused across runs
    _contexts: dict[str, capture.Context]  # per sync: the context its capture was given

    def database(self, name: str) -> Handle:
        """The open handle of a connection (one per connection for the engine's life)."""
        if name not in self._dbs:
            conn = self.sheet.connections[name]
            if isinstance(conn, models.SqlConnection):  # timeout defaults below the lease
                timeouts = conn.timeouts.for_lease(self.sheet.state.lease_ttl)
                conn = conn.model_copy(update={"timeouts": timeouts})
            self._dbs[name] = connectors.REGISTRY[conn.kind].connect(
                name, conn, self.loaded.folder, self.store
            )
        return self._dbs[name]

    def parts(self, name: str) -> Parts:
        """One sync's parts, checked against both catalogs (ConfigError on a mismatch): built on
        the sync's first run and reused by the next ones while the catalogs of its connections
        keep their mark (one query per connection and run), its `map_from` inputs are unchanged
        and its runs do not fail (see `_kept`). Each call hands out its own `Parts` (a caller
        may replace a member for one run); the members are shared."""
        to = self.sheet.connections[self.sheet.syncs[name].to.connection]
        self.watch.start(self.sheet.state.lease_ttl, sql=isinstance(to, models.SqlConnection))
        try:
            built = self._reusable(name)
            if built is None:
                try:
                    built = self._built[name] = self._parts(name)
                except errors.ConfigError:  # marked too: a later fix of the catalog is a change
                    self._mark(name)
                    raise
                self._mark(name)
            built.mapping.resolver.begin()  # the lookup caches are the run's own
            return dataclasses.replace(built)
        except BaseException as exc:
            self._built.pop(name, None)
            self.watch.dog.disarm()
            if crash.dead():  # an in-process crash point: dead as after SIGKILL, nothing more
                raise
            if (cut := self.watch.cut_error(name, exc)) is not None:
                raise cut from None
            raise

    def _reusable(self, name: str) -> Parts | None:
        """The sync's cached parts if they still fit: every connection they use has the catalog
        mark it had at its first build (else the connection is reopened, so reflection starts
        afresh, and every sync's parts on it are dropped), and no `map_from` input changed (else
        the mapping is compiled again)."""
        for conn in self._connections(name):
            if conn in self._marks and catalog_mark.mark(self._dbs[conn]) != self._marks[conn]:
                self._forget(conn)
        built = self._built.get(name)
        if built is None or any(self._marks.get(c) is None for c in self._connections(name)):
            return None  # not built yet, or a connection whose catalog cannot be told: rebuild
        if built.mapping.resolver.changed():
            built.mapping = self._mapping(name, built.dest)
        return built

    def _mark(self, name: str) -> None:
        """Marks the catalogs of the sync's open connections that have no mark yet (their first
        build: what was reflected through them is what the mark stands for)."""
        for conn in self._connections(name) & self._dbs.keys() - self._marks.keys():
            self._marks[conn] = catalog_mark.mark(self._dbs[conn])

    def _forget(self, conn: str) -> None:
        """A connection whose catalog changed: closed (reopened on next use) and every cached
        parts that use it dropped."""
        for sync in [s for s in self._built if conn in self._connections(s)]:
            del self._built[sync]
        self._marks.pop(conn, None)
        self._dbs.pop(conn).close()

    def _connections(self, name: str) -> set[str]:
        """The connections a sync's parts are built from: its two ends, its lookups and its
        `map_from` tables."""
        cfg = self.sheet.syncs[name]
        found = {cfg.from_.connection, cfg.to.connection}
        for spec in [*cfg.fields.values(), *(f for c in cfg.children.values() for f in c.fields.values())]:
            if spec.lookup is not None:
                found.add(spec.lookup.connection)
            if spec.map_from is not None and spec.map_from.connection is not None:
                found.add(spec.map_from.connection)
        return found

    def _parts(self, name: str) -> Parts:
        cfg = self.sheet.syncs[name]
        method = capture.REGISTRY[cfg.changes.method]
        version_column = method.version_column(cfg.changes)
        src_kind = self.sheet.connections[cfg.from_.connection].kind
        dst_kind = self.sheet.connections[cfg.to.connection].kind
        with run_failures.stage(errors.FailureClass.SOURCE):
            source = connectors.REGISTRY[src_kind].source(
                self.database(cfg.from_.connection), name, cfg, version_column
            )
        with run_failures.stage(errors.FailureClass.DESTINATION):
            dest = connectors.REGISTRY[dst_kind].destination(
                self.database(cfg.to.connection), name, cfg, self.loaded.secrets
            )
        mapping = self._mapping(name, dest)
        ctx = self._contexts[name] = capture.Context(name, cfg, self.store, self.database, destination=dest)
        # a capture whose batches never come from capture.base's reads (snapshot: row hashes as
        # versions; the exports) gets no plan, and its runs do not load pyarrow
        columnar = (
            run_columnar.plan(cfg, source, dest, version_column)
            if method.capabilities.columnar_read
            else None
        )
        if columnar is not None:  # its seed reads Arrow batches
            cast(ColumnarSource, source).columnar = True
        return Parts(
            source,
            dest,
            mapping,
            method(source, cfg.changes, cfg.delivery.batch, ctx),
            version_column,
            columnar,
        )

    def _mapping(self, name: str, dest: Destination) -> compile_.Mapping:
        cfg = self.sheet.syncs[name]
        return compile_.Mapping(
            cfg, dest.columns, dest.child_columns(), connect=self.database, folder=self.loaded.folder
        )
