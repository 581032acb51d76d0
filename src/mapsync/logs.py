"""Structured logs: every record names an action (`run_started`, `batch_committed`, …) plus
fields, as console text or JSON lines on stderr, and optionally also into a file rotated by
size (`logging.handlers.RotatingFileHandler`). Values that came from `${VAR}` in the sheet (and
every alert secret) are replaced by `***` in every record, at every level, in every handler: the
formatters redact the whole formatted line, exception text included."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from pathlib import Path
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


FORMATS = ("text", "console", "json")  # console: another name for text
FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_BACKUPS = 5


def setup(
    level: str = "warning",
    fmt: str = "text",
    *,
    file: Path | None = None,
    max_bytes: int = FILE_MAX_BYTES,
    backups: int = FILE_BACKUPS,
) -> None:
    """Log `level` and up to stderr in `fmt` (text/console or json) and, given `file`, into that
    file too (same format; rotated when it would pass `max_bytes`, keeping `backups` old files
    as `file.1` … `file.N`). OSError when the file cannot be opened."""
    driver = logging.getLogger("psycopg")
    if _DRIVER_ECHO not in driver.filters:
        driver.addFilter(_DRIVER_ECHO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        # SQLAlchemy's own warnings and errors (its pool's) in our format, not Python's last resort
        handler.addFilter(_POOL_RESET)
    root = logging.getLogger("mapsync")
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):  # a previous setup's file
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    root.propagate = False
    alchemy = logging.getLogger("sqlalchemy")
    alchemy.handlers[:] = handlers
    alchemy.setLevel(logging.WARNING)
    alchemy.propagate = False
