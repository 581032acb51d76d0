"""A sync's identity (sheet/identity.py): what its state is a record of. It changes with the
source, destination, key, filter and which source column fills which field, and not with
translations, schedules, a password or a URL's query (where credentials may stand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mapsync.sheet import identity
from mapsync.testing import fakes


def _id(tmp_path: Path, url: str = "sqlite:///a.db", **spec: Any) -> str:
    sync = {"key": {"from": "id", "to": "id"}, "fields": {"nm": "name"}, **spec}
    loaded = fakes.sheet({"c": sync}, tmp_path)
    sheet = loaded.sheet.model_copy(
        update={"connections": {"memory": loaded.sheet.connections["memory"].model_copy(update={"url": url})}}
    )
    return identity.identity(sheet, "c")


def test_what_the_state_is_a_record_of_changes_the_identity(tmp_path: Path) -> None:
    base = _id(tmp_path)
    assert len(base) == 16 and base == _id(tmp_path)
    assert _id(tmp_path, key={"from": "id", "to": "ref"}) != base
    assert _id(tmp_path, fields={"nm": "title"}) != base
    assert _id(tmp_path, filter="status = 'A'") != base
    assert _id(tmp_path, url="sqlite:///b.db") != base


def test_translations_schedules_and_secrets_do_not(tmp_path: Path) -> None:
    base = _id(tmp_path, url="postgresql://u:one@db/erp?sslpassword=x")
    assert _id(tmp_path, url="postgresql://u:two@db/erp?sslpassword=y&sslmode=require") == base
    assert (
        _id(tmp_path, url="postgresql://u:one@db/erp", fields={"nm": {"from": "name", "map": {"a": "A"}}})
        == base
    )
    assert _id(tmp_path, url="postgresql://u:one@db/erp", schedule={"every": "5m"}) == base
