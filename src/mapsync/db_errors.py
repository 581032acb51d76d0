"""The one place that turns a database driver's error into mapsync's errors (below the layers:
connectors, captures, lookups and the checks use it).

- `describe_error`: the error as one line for a message: the first line of the driver's error,
  secrets removed (`mapsync.redact`), capped in length;
- `is_transient`: whether the connection failed (lost, refused, timed out: trying again may
  help) rather than the statement (refused by the database: trying again will not);
- `transient` / `permanent` / `refused`: the `TransientError`, `PermanentError` or
  `ConfigError` of a failed step, `"{what}: {one line}"`, with the run's failure class;
- `classified`: transient or permanent by `is_transient`.

A call site keeps its own `except sqlalchemy.exc.DBAPIError` (what it catches and where is its
business: a generator that was abandoned, a retry loop) and builds the error here:

    except sa.exc.DBAPIError as exc:
        raise db_errors.transient(f"sync {sync}: reading the source failed", exc) from None

The state store classifies its own faults (state/faults.py: SQLSTATE classes, retries, what to
do); blocks that fall back to another statement or only log are left where they are.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from mapsync import errors
from mapsync.redact import redact

# the errors of a connection rather than of a statement (PEP 249's OperationalError and
# InterfaceError as SQLAlchemy wraps them)
CONNECTION_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


def first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line for a database error, secrets removed, capped in length."""
    orig = getattr(exc, "orig", None) or exc
    return redact(first_line(orig), tuple(secrets))[:500]


def is_transient(exc: BaseException) -> bool:
    """The connection failed (trying again may help), not the statement."""
    return isinstance(exc, CONNECTION_ERRORS)


# what PostgreSQL, MariaDB/MySQL and SQL Server say when they refuse a login (the driver's text)
_LOGIN_REFUSED = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "access denied for user",
    "login failed for user",
    "authentication failed",
)


def login_refused(exc: BaseException) -> bool:
    """Whether the database refused the credentials (`errors.REASON_AUTH`)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(marker in text for marker in _LOGIN_REFUSED)


def _reason(exc: BaseException) -> str | None:
    return errors.REASON_AUTH if login_refused(exc) else None


def transient(
    what: str, exc: BaseException, failure_class: str, secrets: Iterable[str] = ()
) -> errors.TransientError:
    """`what` failed for now (the run fails with `failure_class`; the next run tries again)."""
    return errors.TransientError(f"{what}: {describe_error(exc, secrets)}", failure_class, _reason(exc))


def permanent(
    what: str, exc: BaseException, failure_class: str, secrets: Iterable[str] = ()
) -> errors.PermanentError:
    """`what` is refused by the database: trying again will not help."""
    return errors.PermanentError(f"{what}: {describe_error(exc, secrets)}", failure_class, _reason(exc))


def refused(what: str, exc: BaseException, secrets: Iterable[str] = ()) -> errors.ConfigError:
    """`what` is refused because of how it is set up (a query, a right, a server setting)."""
    return errors.ConfigError(f"{what}: {describe_error(exc, secrets)}")


def classified(
    what: str, exc: BaseException, failure_class: str, secrets: Iterable[str] = ()
) -> errors.TransientError | errors.PermanentError:
    """Transient when the connection failed, permanent when the statement was refused."""
    if is_transient(exc):
        return transient(what, exc, failure_class, secrets)
    return permanent(what, exc, failure_class, secrets)
