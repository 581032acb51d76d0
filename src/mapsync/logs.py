"""Structured logs: every record names an action (`run_started`, `batch_committed`, …) plus
fields, as text or JSON lines on stderr. Values that came from `${VAR}` in the sheet are
replaced by `***` in every record."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from mapsync.redact import Redactor

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_redactor = Redactor()


def add_secrets(values: tuple[str, ...]) -> None:
    _redactor.add(values)


def redact(text: str) -> str:
    return _redactor(text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "action"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "action": getattr(record, "action", record.getMessage()),
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {extra}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class _DriverEcho(logging.Filter):
    """Drops psycopg's "error ignored terminating <Pipeline …>: pipeline aborted" (also for a
    COPY). psycopg logs it when it closes a pipeline or COPY after an error that it raises
    anyway; mapsync catches that error and reports the row as a record error, so the line only
    repeats it, with no handler of ours, in another format, in the middle of a report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("error ignored terminating"))


_DRIVER_ECHO = _DriverEcho()


class _PoolReset(logging.Filter):
    """SQLAlchemy's pool logs "Exception during reset or similar", with a traceback, when it
    cannot roll back a connection whose socket is gone: after the lease deadline cut a run's
    sockets (lease_watch.py), or a server that ended the session. That is expected and already
    reported by the run: one warning line of ours (`pool_reset_failed`), no traceback, so a
    `--log-format json` stream stays one object per line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Exception during reset"):
            exc = record.exc_info[1] if record.exc_info else None
            first = str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
            record.msg, record.args = "pool_reset_failed", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.__dict__.update(action="pool_reset_failed", error=first)
        return True


_POOL_RESET = _PoolReset()


def setup(level: str = "warning", fmt: str = "text") -> None:
    driver = logging.getLogger("psycopg")
    if _DRIVER_ECHO not in driver.filters:
        driver.addFilter(_DRIVER_ECHO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("mapsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # SQLAlchemy's own warnings and errors (its pool's) in our format, not Python's last resort
    handler.addFilter(_POOL_RESET)
    alchemy = logging.getLogger("sqlalchemy")
    alchemy.handlers[:] = [handler]
    alchemy.setLevel(logging.WARNING)
    alchemy.propagate = False
