"""Driver arguments for a connection's `timeouts:` (sheet/timeout_models.py).

PostgreSQL (libpq): `connect_timeout`, TCP keepalives, `tcp_user_timeout` and a session
`statement_timeout`. MariaDB (PyMySQL): `connect_timeout`, `read_timeout`, `write_timeout`, and
keepalives / `TCP_USER_TIMEOUT` set on the socket; its statement timeout (`max_statement_time`)
is set around destination writes only, since a streamed source read is one long statement.
SQLite has no socket: nothing applies.
"""

from __future__ import annotations

import datetime as dt
import math
import socket
from typing import Any

import sqlalchemy as sa

from mapsync.sheet.timeout_models import Timeouts

DEFAULT_LEASE = dt.timedelta(minutes=10)


def resolved(cfg: Timeouts | None, lease_ttl: dt.timedelta | None = None) -> Timeouts:
    return (cfg or Timeouts()).for_lease(lease_ttl or DEFAULT_LEASE)


def _s(value: dt.timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def connect_args(backend: str, t: Timeouts) -> dict[str, Any]:
    """`connect_args` for `sa.create_engine` (the timeouts must be resolved)."""
    if backend == "postgresql":
        return {
            "options": f"-c timezone=UTC -c statement_timeout={math.ceil(_s(t.statement) * 1000)}",
            "connect_timeout": max(2, math.ceil(_s(t.connect))),  # libpq's smallest useful value
            "keepalives": 1,
            "keepalives_idle": max(1, round(_s(t.keepalives_idle))),
            "keepalives_interval": max(1, round(_s(t.keepalives_interval))),
            "keepalives_count": t.keepalives_count,
            "tcp_user_timeout": math.ceil(_s(t.tcp_user_timeout) * 1000),
        }
    if backend in ("mysql", "mariadb"):
        return {
            "connect_timeout": max(1, math.ceil(_s(t.connect))),
            "read_timeout": max(1, math.ceil(_s(t.read))),
            "write_timeout": max(1, math.ceil(_s(t.write))),
        }
    return {}


def listen(engine: sa.Engine, t: Timeouts) -> None:
    """Socket options PyMySQL has no argument for: keepalives and TCP_USER_TIMEOUT."""
    if engine.dialect.name != "mysql":
        return

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        sock = getattr(dbapi_conn, "_sock", None)
        if sock is None or sock.family == socket.AF_UNIX:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", max(1, round(_s(t.keepalives_idle)))),
            ("TCP_KEEPINTVL", max(1, round(_s(t.keepalives_interval)))),
            ("TCP_KEEPCNT", t.keepalives_count),
            ("TCP_USER_TIMEOUT", math.ceil(_s(t.tcp_user_timeout) * 1000)),
        ):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    sa.event.listen(engine, "connect", on_connect)


def statement_limit(dialect: str, t: Timeouts) -> str | None:
    """The statement that bounds each following statement of a MariaDB destination write."""
    if dialect == "mysql" and t.statement is not None:
        return f"SET SESSION max_statement_time = {_s(t.statement):.3f}"
    return None


UNLIMITED_MYSQL = "SET SESSION max_statement_time = 0"
# a change-log read (PostgreSQL slot functions) may run long by design: exempt it
UNLIMITED_PG_LOCAL = "SET LOCAL statement_timeout = 0"
