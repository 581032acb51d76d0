"""A sync's identity: what its state (cursors, key ledger) is a record of.

The key ledger holds, per source key, what was delivered where. It stays true only while the
sync reads the same rows (source connection, table or query, filter), writes the same rows
(destination connection and table), names them by the same key and fills the same destination
columns from the same source columns (children included). A change of any of these makes the
state a record of another sync: the daemon refuses such a change on reload, and refuses to run
a sync whose stored identity (written by its seed) differs from the sheet's, until
`mapsync seed --again` (which stores the new identity) or `mapsync state reset`.

What does not change the identity: translations (value maps, defaults, truncation, country and
lookup rules), schedules, delivery options, delete policy. They change what a record becomes,
not which record it is; a fixed map is applied by `mapsync retry` and by the next change.

The identity is a short hash. No secret goes into it: of a connection it takes the URL with its
password hidden (a SQL connection) or the base URL (an API), never a credential.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

import sqlalchemy as sa

from mapsync import errors
from mapsync.sheet import models

CURSOR = "identity"  # the cursor a seed stores the sync's identity in


def _where(sheet: models.Sheet, connection: str) -> str:
    """Where a connection points, without any secret: a SQL URL without its password and query
    (`?sslpassword=…`), an API's base URL without its query and user info, and its site."""
    conn = sheet.connections[connection]
    url = getattr(conn, "url", None)
    if isinstance(url, str):
        try:
            return sa.make_url(url).set(query={}).render_as_string(hide_password=True)
        except (sa.exc.ArgumentError, ValueError):
            return "(unparsable url)"
    base = urllib.parse.urlsplit(str(getattr(conn, "base_url", "") or ""))
    host = base.hostname or ""
    where = f"{base.scheme}://{host}{f':{base.port}' if base.port else ''}{base.path}" if host else ""
    return f"{where} {getattr(conn, 'site', '') or ''}".strip() or conn.kind


def _fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {dest: getattr(spec, "from_", None) for dest, spec in sorted(fields.items())}


def identity(sheet: models.Sheet, name: str) -> str:
    """The identity of sync `name` of `sheet`: 16 hex characters."""
    cfg = sheet.syncs[name]
    data: dict[str, Any] = {
        "from": cfg.from_.model_dump(mode="json", by_alias=True),
        "to": cfg.to.model_dump(mode="json", by_alias=True),
        "source": _where(sheet, cfg.from_.connection),
        "destination": _where(sheet, cfg.to.connection),
        "key": cfg.key.model_dump(mode="json", by_alias=True),
        "filter": cfg.filter,
        "fields": _fields(cfg.fields),
        "children": {
            child_name: {
                "from": child.from_.model_dump(mode="json", by_alias=True),
                "to": child.to.model_dump(mode="json", by_alias=True),
                "key": child.key.model_dump(mode="json", by_alias=True),
                "parent": child.parent.model_dump(mode="json", by_alias=True),
                "fields": _fields(child.fields),
            }
            for child_name, child in sorted(cfg.children.items())
        },
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def check(sheet: models.Sheet, name: str, cursors: dict[str, Any], where: str) -> None:
    """Refuse (IdentityChanged) a run of sync `name` whose state, `cursors`, a seed stored under
    another identity than `sheet` gives it (`where`: the sync's place in the sheet file). A state
    without a stored identity (seeded before mapsync stored one) passes."""
    stored = cursors.get(CURSOR)
    if stored is not None and stored != identity(sheet, name):
        raise errors.IdentityChanged(
            f"sync {name}: its state was seeded with another source, destination, key or fields "
            f"than {where} gives it; run `mapsync seed --sync {name} --again` to re-read it under "
            f"this sheet, or `mapsync state reset --sync {name}`"
        )


def changed(old: models.Sheet, new: models.Sheet, name: str) -> bool:
    """Whether sync `name` (in both sheets) is another sync in `new`."""
    return identity(old, name) != identity(new, name)
