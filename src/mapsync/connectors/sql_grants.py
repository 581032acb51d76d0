"""MariaDB/MySQL privileges read from SHOW GRANTS (`mapsync check`)."""

from __future__ import annotations

import re

_GRANT = re.compile(r"^GRANT (.+?) ON (\S+) TO ", re.IGNORECASE)


def mysql_missing(grants: list[str], database: str, table: str, wanted: list[str]) -> list[str]:
    """The privileges of `wanted` that no line of SHOW GRANTS gives on `database`.`table`."""
    have: set[str] = set()
    targets = {"*.*", f"`{database}`.*", f"`{database}`.`{table}`"}
    for line in grants:
        match = _GRANT.match(line)
        if not match or match.group(2) not in targets:
            continue
        privs = {p.strip().upper() for p in match.group(1).split(",")}
        if "ALL PRIVILEGES" in privs or "ALL" in privs:
            return []
        have |= {p.split("(")[0].strip() for p in privs}
    return [p for p in wanted if p not in have]
