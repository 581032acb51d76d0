"""`mapsync check`: connect to everything a sheet names and report what works, changing nothing.

Per connection: reachability and authentication (SQL: a `SELECT 1`, server version and user;
REST/CIMcloud: the connector's own `check`, and the call budget left). Per sync: the source and
destination tables exist with every mapped column (the same catalog checks a run makes), and
write permission where it is cheap to tell (PostgreSQL `has_table_privilege`, MariaDB `SHOW
GRANTS`, a SQLite file's permissions). The state store is looked at, never created.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from mapsync import capture, connectors, db_errors, errors
from mapsync.capture import health
from mapsync.connectors.sql import SqlDatabase, normalize_url
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.connectors.sql_grants import mysql_missing as mysql_missing
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Capture, Destination, Handle, Source
from mapsync.redact import redact
from mapsync.sheet import models, places
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.state.probe import SCHEMA_VERSION, stored_version
from mapsync.state.store import StateStore, resolve_url


@dataclasses.dataclass
class Finding:
    subject: str
    status: str  # ok | fail | note | warn (a warning also makes `check` exit 1)
    detail: str


class Checkup:
    def __init__(self, loaded: LoadedSheet) -> None:
        self.loaded = loaded
        self.found: list[Finding] = []
        self.store: StateStore | None = None
        self.handles: dict[str, Handle | None] = {}

    def add(self, subject: str, status: str, detail: str) -> None:
        detail = redact(detail, self.loaded.secrets)
        self.found.append(Finding(subject, status, detail))

    @property
    def ok(self) -> bool:
        return all(f.status not in ("fail", "warn") for f in self.found)

    def run(self) -> list[Finding]:
        try:
            self._state()
            for name in self.loaded.sheet.connections:
                self._connection(name)
            for name in self.loaded.sheet.syncs:
                self._sync(name)
            self._capture()
        finally:
            for handle in self.handles.values():
                if handle is not None:
                    handle.close()
            if self.store is not None:
                self.store.close()
        return self.found

    # ----------------------------------------------------------------- state store

    def _state(self) -> None:
        cfg = self.loaded.sheet.state
        url = normalize_url(resolve_url(cfg.url, self.loaded.folder), self.loaded.folder)
        subject = f"state store {url.render_as_string(hide_password=True)}"
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
            self.add(subject, "note", "not created yet (`mapsync seed` creates it)")
            return
        try:
            version = stored_version(url, _timeout(url.get_backend_name()))
        except (sa.exc.SQLAlchemyError, ModuleNotFoundError) as exc:  # a line of the report, not an error
            self.add(subject, "fail", f"cannot connect: {db_errors.describe_error(exc, self.loaded.secrets)}")
            return
        if version is None:
            self.add(subject, "note", "reachable, no mapsync tables yet (`mapsync seed` creates them)")
            return
        if int(version) > SCHEMA_VERSION:
            self.add(subject, "fail", f"schema v{version} is newer than this mapsync: upgrade mapsync")
            return
        self.add(
            subject,
            "ok",
            f"schema v{version}" + ("" if int(version) == SCHEMA_VERSION else " (upgraded on next run)"),
        )
        if int(version) == SCHEMA_VERSION:
            state = self.loaded.sheet.state
            try:
                self.store = StateStore.open(
                    url.render_as_string(hide_password=False),
                    self.loaded.folder,
                    create=False,
                    timeouts=state.timeouts.for_lease(state.lease_ttl),
                    repair=False,  # `check` changes nothing
                )
            except errors.StateError as exc:
                self.add(subject, "fail", redact(str(exc), self.loaded.secrets))

    # ----------------------------------------------------------------- connections

    def _connection(self, name: str) -> None:
        cfg = self.loaded.sheet.connections[name]
        subject = f"connection {name} ({cfg.kind})"
        connector = connectors.REGISTRY.get(cfg.kind)
        if connector is None:
            self.add(subject, "fail", f"no connector for kind {cfg.kind!r}")
            self.handles[name] = None
            return
        if cfg.kind == "sql":
            self._sql_connection(name, subject)
            return
        try:
            # with the state store, an API's call budget is what every process has used
            handle = connector.connect(name, cfg, self.loaded.folder, self.store)
        except (errors.MapsyncError, OSError) as exc:
            self.add(subject, "fail", str(exc))
            self.handles[name] = None
            return
        self.handles[name] = handle
        try:
            result = handle.check()
        except Exception as exc:  # a connector's own failure, reported as unreachable
            self.add(subject, "fail", f"check failed: {type(exc).__name__}: {exc}"[:500])
        else:
            if result is None:
                self.add(subject, "note", "this connector has no check: reachability not tested")
            else:
                good = all(result.get(k) is not False for k in ("ok", "reachable", "auth_ok"))
                self.add(subject, "ok" if good else "fail", _describe(result))
        self._budget(name, handle)

    def _budget(self, name: str, handle: Handle) -> None:
        budget = handle.budget
        if budget is None:
            return
        left = budget.remaining()
        parts = [f"{lim['remaining']}/{lim['limit']} left" for lim in left["limits"]]
        if left.get("blocked_for"):
            parts.append(f"blocked for {left['blocked_for']}s by the server")
        if left.get("server_remaining") is not None:
            parts.append(f"server says {left['server_remaining']} left")
        scope = "shared through the state store" if self.store is not None else "this process only"
        self.add(f"connection {name}: call budget", "ok", ", ".join(parts) + f" ({scope})")

    def _sql_connection(self, name: str, subject: str) -> None:
        cfg = self.loaded.sheet.connections[name]
        assert isinstance(cfg, models.SqlConnection)  # the caller looked at its kind
        try:
            lease = self.loaded.sheet.state.lease_ttl
            timeouts = cfg.timeouts.for_lease(lease)
            db = SqlDatabase(name, cfg.url, self.loaded.folder, cfg.timezone, timeouts)
        except errors.ConfigError as exc:
            self.add(subject, "fail", str(exc))
            self.handles[name] = None
            return
        sql = {
            "postgresql": "SELECT version(), current_user",
            "mysql": "SELECT version(), current_user()",
            "sqlite": "SELECT 'SQLite ' || sqlite_version(), ''",
        }[db.dialect]
        try:
            with db.engine.connect() as conn:
                version, user = conn.execute(sa.text(sql)).one()
        except sa.exc.SQLAlchemyError as exc:  # a line of the report, not an error
            self.add(
                f"connection {name} ({db.dialect})",
                "fail",
                f"cannot connect: {_reason(exc, self.loaded.secrets)}",
            )
            db.close()
            self.handles[name] = None
            return
        short = " ".join(str(version).split()[:2])
        self.add(
            f"connection {name} ({db.dialect})",
            "ok",
            f"reachable, {short}" + (f", user {user}" if user else ""),
        )
        self.handles[name] = db

    # ----------------------------------------------------------------- syncs

    def _sync(self, name: str) -> None:
        sheet = self.loaded.sheet
        cfg = sheet.syncs[name]
        for side, conn_name in (("source", cfg.from_.connection), ("destination", cfg.to.connection)):
            handle = self.handles.get(conn_name)
            subject = f"sync {name}: {side} ({conn_name})"
            if handle is None:
                self.add(subject, "fail", f"not checked: connection {conn_name} is not usable")
                continue
            kind = sheet.connections[conn_name].kind
            connector = connectors.REGISTRY[kind]
            part: Source | Destination
            try:
                if side == "source":
                    method = capture.REGISTRY[cfg.changes.method]
                    part = connector.source(handle, name, cfg, method.version_column(cfg.changes))
                else:
                    part = connector.destination(handle, name, cfg, self.loaded.secrets)
            except errors.ConfigError as exc:
                hint = ""
                if side == "destination" and "unknown table" in str(exc) and isinstance(handle, SqlDatabase):
                    hint = " (`mapsync check SHEET --ddl` prints a suggested CREATE TABLE)"
                named = places.column_places(self.loaded, name, side, places.missing_columns(str(exc)))
                if named:  # where the sheet names the missing columns
                    hint += "; named at " + "; ".join(named)
                self.add(subject, "fail", str(exc) + hint)
                continue
            except (errors.TransientError, errors.PermanentError) as exc:
                self.add(subject, "fail", str(exc))
                continue
            where = cfg.from_.table or (cfg.from_.query and "query") or cfg.from_.resource
            target = where if side == "source" else (cfg.to.table or cfg.to.resource)
            self.add(subject, "ok", f"{target}: every mapped column is there")
            if side == "source" and isinstance(cfg.changes, models.ExportFlagChanges):
                self._export(name, subject, part)
            if isinstance(handle, SqlDatabase):
                self._privileges(subject, handle, part, side, cfg)

    def _export(self, name: str, subject: str, source: Source | Destination) -> None:
        """An export's write-back columns (flag, status, error, version, since, created, touch,
        document) are in its source table: the capture is built as a run builds it."""
        cfg = self.loaded.sheet.syncs[name]
        assert isinstance(cfg.changes, models.ExportFlagChanges)
        method = capture.REGISTRY[cfg.changes.method]

        def connection(conn: str) -> Handle:
            found = self.handles.get(conn)
            if found is None:
                raise errors.ConfigError(f"connection {conn} is not usable")
            return found

        # the capture's constructor reads the catalog only (the store is not used: it may be absent)
        ctx = capture.Context(name, cfg, cast(Store, self.store), connection)
        try:
            method(cast(Source, source), cfg.changes, cfg.delivery.batch, ctx)
        except (errors.ConfigError, errors.TransientError, errors.PermanentError) as exc:
            self.add(f"{subject}: export", "fail", str(exc))
            return
        if cfg.from_.table is None:  # an API's order export: the API lists no fields to check
            target = cfg.changes.write_back.resource if cfg.changes.write_back else "orders"
            message = (
                f"read through the inbox; status written to {target!r} (its fields are checked by "
                "the first write: the API documents no field list)"
            )
        else:
            message = f"the flag {cfg.changes.flag!r} and the write-back columns are there"
        self.add(f"{subject}: export", "ok", message)

    def _capture(self) -> None:
        """Change-capture health of log and queue syncs (slot WAL, binlog, queue backlog)."""
        names = [
            n
            for n, cfg in self.loaded.sheet.syncs.items()
            if self.handles.get(cfg.from_.connection) is not None
        ]
        for name, result in health.report(self.loaded, names, self.store, self.handles).items():
            subject = f"sync {name}: change capture ({result['method']})"
            self.add(subject, "ok" if not result["warnings"] else "note", result["summary"])
            for warning in result["warnings"]:
                self.add(subject, "warn", warning)

    def _privileges(
        self, subject: str, db: SqlDatabase, part: Source | Destination, side: str, cfg: Any
    ) -> None:
        if isinstance(part, SqlSource):
            if cfg.from_.table is None:  # a query: its tables are the query's
                return
            table = part.db.table(cfg.from_.table, f"sync {part.sync}: from.table")
            # an export writes its flag and status back into the source table
            wanted = ["SELECT", "UPDATE"] if isinstance(cfg.changes, models.ExportFlagChanges) else ["SELECT"]
        elif isinstance(part, SqlDestination):
            table = part.main.table
            wanted = ["SELECT", "INSERT", "UPDATE"]
            if cfg.deletes.policy in ("hard", "by_reason"):
                wanted.append("DELETE")
        else:
            return
        subject = f"{subject}: privileges"
        try:
            if db.dialect == "postgresql":
                qualified = db.engine.dialect.identifier_preparer.format_table(table)
                with db.engine.connect() as conn:
                    missing = [
                        p
                        for p in wanted
                        if not conn.execute(
                            sa.text("SELECT has_table_privilege(:t, :p)"), {"t": qualified, "p": p}
                        ).scalar()
                    ]
                status = "fail" if missing else "ok"
                detail = f"missing {', '.join(missing)}" if missing else ", ".join(wanted)
                self.add(subject, status, detail)
            elif db.dialect == "mysql":
                with db.engine.connect() as conn:
                    grants = [str(r[0]) for r in conn.execute(sa.text("SHOW GRANTS"))]
                    schema_name = table.schema or conn.execute(sa.text("SELECT DATABASE()")).scalar()
                missing = mysql_missing(grants, str(schema_name), table.name, wanted)
                if missing:
                    self.add(
                        subject,
                        "note",
                        f"SHOW GRANTS does not show {', '.join(missing)} (roles are not followed)",
                    )
                else:
                    self.add(subject, "ok", ", ".join(wanted))
            else:
                path = db.url.database
                if path and side == "destination" and not os.access(path, os.W_OK):
                    self.add(subject, "fail", f"the file {path} is not writable")
                elif path and side == "destination":
                    self.add(subject, "ok", "the file is writable")
        except sa.exc.SQLAlchemyError as exc:  # a line of the report, not an error
            self.add(subject, "note", f"could not tell: {db_errors.describe_error(exc, self.loaded.secrets)}")


if TYPE_CHECKING:  # mypy checks the roles of what the registries load on first use (never called)
    from mapsync.capture.export_flag import ExportFlagCapture
    from mapsync.capture.full import FullCapture
    from mapsync.capture.inbox import InboxCapture
    from mapsync.capture.log import LogCapture
    from mapsync.capture.queue import QueueCapture
    from mapsync.capture.snapshot import SnapshotCapture
    from mapsync.capture.watermark import WatermarkCapture
    from mapsync.cimcloud.connector import CimcloudConnector
    from mapsync.rest.connector import RestConnector

    def _implements(
        rest: RestConnector,
        cimcloud: CimcloudConnector,
        methods: tuple[
            FullCapture,
            InboxCapture,
            LogCapture,
            QueueCapture,
            SnapshotCapture,
            WatermarkCapture,
            ExportFlagCapture,
        ],
    ) -> None:
        connectors_: tuple[connectors.Connector, connectors.Connector] = (rest, cimcloud)
        captures: tuple[Capture, Capture, Capture, Capture, Capture, Capture, Capture] = methods
        del connectors_, captures


def _describe(result: Any) -> str:
    """A connector's check result as a line for people (`--json` keeps the data)."""
    if not isinstance(result, dict):
        return str(result)[:500]
    words = {
        "reachable": ("reachable", "not reachable"),
        "auth_ok": ("login accepted", "login refused"),
        "ok": ("ok", "not ok"),
    }
    parts: list[str] = []
    for k, v in result.items():
        if k in ("connection", "kind") or v is None:
            continue
        if k in words and isinstance(v, bool):
            parts.append(words[k][0] if v else words[k][1])
        elif k == "status" and isinstance(v, int):
            parts.append(f"HTTP {v}")
        elif k == "budget_remaining":
            parts.append(f"the server says {v} call(s) left")
        elif isinstance(v, dict):
            inner = ", ".join(
                f"{ik} {iv}" for ik, iv in v.items() if iv is not None and not isinstance(iv, dict)
            )
            parts.append(f"{k}: {inner}" if inner else k)
        else:
            parts.append(f"{k}: {v}")
    return ", ".join(parts)[:500]


def _reason(exc: BaseException, secrets: tuple[str, ...]) -> str:
    text = db_errors.describe_error(exc, secrets)
    return re.sub(r"^\(\S+\)\s*", "", text)


def _timeout(backend: str) -> dict[str, Any]:
    return {"connect_timeout": 10} if backend in ("postgresql", "mysql", "mariadb") else {}
