"""db_errors: the one place that turns a driver's error into mapsync's errors."""

from __future__ import annotations

import sqlalchemy as sa

from mapsync import db_errors, errors


class _Driver(Exception):
    pass


def _wrapped(kind: type[sa.exc.DBAPIError], text: str) -> sa.exc.DBAPIError:
    return kind("SELECT 1", {}, _Driver(text))


def test_a_lost_connection_is_transient_a_refused_statement_permanent() -> None:
    for kind in (sa.exc.OperationalError, sa.exc.InterfaceError):
        exc = _wrapped(kind, "server closed the connection unexpectedly\nmore detail")
        assert db_errors.is_transient(exc)
        made = db_errors.classified("lookup of `st` in erp.codes", exc, "source")
        assert isinstance(made, errors.TransientError)
        assert str(made) == "lookup of `st` in erp.codes: server closed the connection unexpectedly"
        assert made.failure_class == "source"
    refused = _wrapped(sa.exc.ProgrammingError, 'relation "codes" does not exist')
    assert not db_errors.is_transient(refused)
    made = db_errors.classified("lookup", refused, "source")
    assert isinstance(made, errors.PermanentError)
    assert (str(made), made.failure_class) == ('lookup: relation "codes" does not exist', "source")
    assert made.reason is None


def test_the_message_is_one_line_with_the_secrets_removed() -> None:
    exc = _wrapped(sa.exc.OperationalError, "password authentication failed for s3cret-pw\nDETAIL: x")
    made = db_errors.transient("connection erp: cannot connect", exc, "destination", ("s3cret-pw",))
    assert str(made) == "connection erp: cannot connect: password authentication failed for ***"
    assert made.failure_class == "destination"
    assert made.reason == errors.REASON_AUTH  # a refused login: the `auth_refused` monitor's
    mariadb = _wrapped(sa.exc.OperationalError, "(1045, \"Access denied for user 'app'@'10.0.0.2'\")")
    assert db_errors.login_refused(mariadb) and not db_errors.login_refused(
        _wrapped(sa.exc.OperationalError, "x")
    )
    assert str(db_errors.refused("sync c", exc)).startswith("sync c: password authentication failed")
    assert isinstance(db_errors.refused("sync c", exc), errors.ConfigError)
    assert db_errors.describe_error(_wrapped(sa.exc.OperationalError, "x" * 900)) == "x" * 500
