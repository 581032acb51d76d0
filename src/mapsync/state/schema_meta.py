"""The one SQLAlchemy `MetaData` every state table belongs to (schema.py, schema_v7.py)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
