"""Look at a state store without opening it as a `StateStore` (which would create or upgrade
its tables, and repair its runs): `mapsync check` reads the schema version it holds."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mapsync.state import schema

SCHEMA_VERSION = schema.SCHEMA_VERSION  # the version this mapsync writes


def stored_version(url: sa.URL, connect_args: dict[str, Any]) -> int | None:
    """The schema version the store at `url` holds; None when it has no mapsync tables yet.
    A store that cannot be reached raises as `sa.create_engine`/`connect` do (SQLAlchemyError,
    or ModuleNotFoundError for a missing driver)."""
    engine = sa.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema.meta.name):
                return None
            version = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
            ).scalar()
    finally:
        engine.dispose()
    return None if version is None else int(version)
