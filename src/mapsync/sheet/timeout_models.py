"""The `timeouts:` block of a SQL connection and of the state store, and its check against the lease.

No statement and no socket may outlive the lease of the run that sent it (a run that lost its
lease must not write afterwards), so every timeout defaults to something below the lease and a
configured one that is not below it is refused by `validate`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration

# the defaults, each bounded by `lease_ttl / 2` when the lease is shorter
CONNECT = dt.timedelta(seconds=10)
STATEMENT = None  # lease_ttl / 2
SOCKET = None  # read / write: lease_ttl / 2
KEEPALIVES_IDLE = dt.timedelta(seconds=30)
KEEPALIVES_INTERVAL = dt.timedelta(seconds=10)
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT = dt.timedelta(seconds=60)
# the timeouts that bound how long a run waits; each must stay below the lease
BOUNDED = ("connect", "statement", "read", "write", "tcp_user_timeout")


class Timeouts(Model):
    """How long mapsync waits on a database connection before it counts the wait as a failure."""

    connect: Duration | None = Field(
        None, description="Opening a connection. Default: 10 s (at most `lease_ttl`/2)."
    )
    statement: Duration | None = Field(
        None,
        description=(
            "One SQL statement, enforced by the server (PostgreSQL `statement_timeout`; MariaDB "
            "`max_statement_time` on destination writes). Default: `lease_ttl`/2. Change-log "
            "streams are exempt."
        ),
    )
    read: Duration | None = Field(
        None, description="Waiting for the server's answer on the socket (MariaDB). Default: `lease_ttl`/2."
    )
    write: Duration | None = Field(
        None, description="Sending to the server on the socket (MariaDB). Default: `lease_ttl`/2."
    )
    keepalives_idle: Duration = Field(
        KEEPALIVES_IDLE, description="TCP keepalive: idle time before the first probe."
    )
    keepalives_interval: Duration = Field(
        KEEPALIVES_INTERVAL, description="TCP keepalive: time between unanswered probes."
    )
    keepalives_count: int = Field(
        KEEPALIVES_COUNT, ge=1, description="TCP keepalive: unanswered probes before the connection is dead."
    )
    tcp_user_timeout: Duration | None = Field(
        None,
        description=(
            "How long sent data may stay unacknowledged before the connection is dropped (Linux "
            "`TCP_USER_TIMEOUT`). Default: 60 s (at most `lease_ttl`/2)."
        ),
    )

    def for_lease(self, lease_ttl: dt.timedelta) -> Timeouts:
        """Every unset timeout filled with its default, bounded by half the lease."""
        half = lease_ttl / 2
        fill: dict[str, Any] = {}
        for name, default in (
            ("connect", CONNECT),
            ("statement", half),
            ("read", half),
            ("write", half),
            ("tcp_user_timeout", TCP_USER_TIMEOUT),
        ):
            if getattr(self, name) is None:
                fill[name] = min(default, half)
        return self.model_copy(update=fill) if fill else self


def check_timeouts(sheet: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Configured timeouts that are not below `state.lease_ttl` (path, message) for `validate`."""
    lease: dt.timedelta = sheet.state.lease_ttl
    blocks: list[tuple[tuple[str | int, ...], Timeouts]] = [(("state", "timeouts"), sheet.state.timeouts)]
    for name, conn in sheet.connections.items():
        if isinstance(getattr(conn, "timeouts", None), Timeouts):
            blocks.append((("connections", name, "timeouts"), conn.timeouts))
    found: list[tuple[tuple[str | int, ...], str]] = []
    for path, block in blocks:
        for key, value in block:
            if key in block.model_fields_set and isinstance(value, dt.timedelta) and value <= dt.timedelta(0):
                found.append(
                    ((*path, key), f"{_text(value)} would mean no limit at all: give a time above 0 s")
                )
        for key in BOUNDED:
            value = getattr(block, key)
            if key in block.model_fields_set and value is not None and value >= lease:
                found.append(
                    (
                        (*path, key),
                        f"{_text(value)} is not below the lease (`state.lease_ttl` {_text(lease)}): a run "
                        "that lost its lease could still write; make it shorter or the lease longer",
                    )
                )
    return found


def _text(value: dt.timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g} s"
