"""Database errors as one line for messages: the first line of the driver's error, secrets
removed, capped in length (below the layers: connectors, captures and lookups use it)."""

from __future__ import annotations

from mapsync.redact import redact


def first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def describe_error(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """One line for a database error, secrets removed, capped in length."""
    orig = getattr(exc, "orig", None) or exc
    return redact(first_line(orig), secrets)[:500]
